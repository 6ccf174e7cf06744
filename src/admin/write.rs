//! Mutating admin endpoints: run-time backends (add, remove), drain and undrain,
//! maintenance mode and "reload the config file now". All of them need the admin token
//! when one is configured.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::config::BackendConfig;
use crate::pool::Pool;

use super::error::ApiError;
use super::views::BackendView;
use super::{auth, persist, AdminState};

/// Passes when no admin token is configured or `headers` carry the right one;
/// otherwise a 401 (or a 500 when the configured token cannot be read — refusing
/// rather than opening up). The admin API and the cluster endpoints share it.
pub fn check_token(pool: &Pool, headers: &HeaderMap) -> Result<(), ApiError> {
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

/// Middleware form of [`check_token`] for the mutating routes.
pub async fn require_token(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    match check_token(&s.pool, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Writes the pool's run-time state to the state file, if there is one. Returns
/// whether it was persisted.
async fn persist(s: &AdminState) -> Result<bool, ApiError> {
    let Some(dir) = persist::state_dir(&s.pool.yaml_config()) else {
        return Ok(false);
    };
    let state = persist::snapshot(&s.pool);
    tokio::task::spawn_blocking(move || persist::save(&dir, &state))
        .await
        .map_err(|e| ApiError::internal(format!("state file writer failed: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot write the state file");
            ApiError::internal(format!("applied but not persisted: {e}"))
        })?;
    Ok(true)
}

fn view(s: &AdminState, name: &str) -> Result<BackendView, ApiError> {
    let table = s.pool.load();
    let b = table
        .get(name)
        .ok_or_else(|| ApiError::unknown_backend(name))?;
    Ok(BackendView::of(b))
}

/// `POST /api/v1/backends {"name","url","weight"?,"max_concurrency"?}`: adds a run-time
/// backend, or updates one added earlier (idempotent: a retried call is harmless).
pub async fn add_backend(
    State(s): State<AdminState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut fields: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    if let Some(obj) = fields.as_object_mut() {
        if obj.remove("ttl").is_some_and(|t| !t.is_null()) {
            return Err(no_leases());
        }
    }
    // The same validation as a YAML entry, with the same messages.
    let backend: BackendConfig = serde_json::from_value(fields)
        .map_err(|e| ApiError::bad_request(format!("invalid backend: {e}")))?;
    let name = backend.name.clone();
    let _guard = s.writes.lock().await;
    let ((created, _), _) = s.pool.update_dynamic(|yaml, dynamic| {
        if yaml.backends.iter().any(|b| b.name == backend.name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "backend '{}' is defined in the config file; change it there",
                    backend.name
                ),
            ));
        }
        let created = match dynamic.iter_mut().find(|b| b.name == backend.name) {
            Some(existing) => {
                *existing = backend;
                false
            }
            None => {
                dynamic.push(backend);
                true
            }
        };
        Ok((created, ()))
    })?;
    let persisted = persist(&s).await?;
    tracing::info!(backend = %name, created, persisted, "run-time backend added");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "backend": view(&s, &name)?, "created": created, "persisted": persisted })),
    ))
}

/// `DELETE /api/v1/backends/{name}`: removes a run-time backend. Its in-flight requests
/// finish (they hold its state); new ones go elsewhere at once.
pub async fn remove_backend(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let _guard = s.writes.lock().await;
    let in_flight = s.pool.load().get(&name).map_or(0, |b| b.state.in_flight());
    s.pool.update_dynamic(|yaml, dynamic| {
        if yaml.backends.iter().any(|b| b.name == name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("backend '{name}' is defined in the config file; remove it there"),
            ));
        }
        let before = dynamic.len();
        dynamic.retain(|b| b.name != name);
        if dynamic.len() == before {
            return Err(ApiError::unknown_backend(&name));
        }
        Ok(())
    })?;
    let persisted = persist(&s).await?;
    tracing::info!(backend = %name, in_flight, persisted, "run-time backend removed");
    Ok(Json(
        json!({ "removed": name, "in_flight": in_flight, "persisted": persisted }),
    ))
}

async fn set_draining(s: AdminState, name: String, on: bool) -> Result<Json<Value>, ApiError> {
    let _guard = s.writes.lock().await;
    {
        let table = s.pool.load();
        let b = table
            .get(&name)
            .ok_or_else(|| ApiError::unknown_backend(&name))?;
        b.state.set_draining(on);
    }
    let persisted = persist(&s).await?;
    let v = view(&s, &name)?;
    tracing::info!(backend = %name, draining = on, in_flight = v.in_flight, "backend drain changed");
    Ok(Json(json!({ "backend": v, "persisted": persisted })))
}

/// `POST /api/v1/backends/{name}/drain`: no new requests; in-flight ones finish.
pub async fn drain(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_draining(s, name, true).await
}

pub async fn undrain(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_draining(s, name, false).await
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
pub async fn serving_enable(State(s): State<AdminState>) -> Json<Value> {
    set_serving(&s, true)
}

/// `POST /api/v1/serving/disable`: maintenance mode for this replica.
pub async fn serving_disable(State(s): State<AdminState>) -> Json<Value> {
    set_serving(&s, false)
}

/// Leases (ttl, heartbeat) expire by a clock every replica must agree on: they live in
/// the replicated pool, so a single replica refuses them instead of half-honouring them.
fn no_leases() -> ApiError {
    ApiError::bad_request(
        "ttl and heartbeat need the cluster (configure `cluster:`); \
         without it run-time backends stay until removed",
    )
}

/// `POST /api/v1/backends/{name}/heartbeat` on a single replica.
pub async fn heartbeat(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if s.pool.load().get(&name).is_none() {
        return Err(ApiError::unknown_backend(&name));
    }
    Err(no_leases())
}

/// `POST /api/v1/reload`: re-reads the config file now through the reloader (the same
/// path as SIGHUP and file changes) and answers how it went: 200 when applied, 422 with
/// the `FILE:line:col: message` when the file is refused and the running config stays.
pub async fn reload(State(s): State<AdminState>) -> Result<Json<Value>, ApiError> {
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
