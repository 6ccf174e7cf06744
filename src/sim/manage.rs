//! Model management routes: pull, push, create, copy, delete, and the blob upload that
//! precedes a create. They change what is on the simulated disk (and so `/api/tags`),
//! stream NDJSON progress the way Ollama does, and never fault.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::json_style::JsonStyle;
use super::models::{hex, hex_sha256, is_valid_digest, ModelEntry};
use super::respond::{
    model_not_found, model_required, ndjson_line, parse_json, ApiError, OllamaShape, NDJSON,
};
use super::state::SimState;
use crate::model::ModelName;

/// Request bodies of the management routes name the model `model` or (older) `name`.
#[derive(Deserialize)]
struct NamedRequest {
    model: Option<String>,
    name: Option<String>,
    stream: Option<bool>,
}

impl NamedRequest {
    fn requested(&self) -> &str {
        self.model
            .as_deref()
            .filter(|model| !model.is_empty())
            .or(self.name.as_deref())
            .unwrap_or_default()
    }

    fn model_name(&self) -> Result<ModelName, ApiError> {
        ModelName::parse(self.requested()).ok_or_else(model_required)
    }
}

/// Answers a progress-reporting operation: the `lines`, then `success` once `commit`
/// has run; with `stream: false`, just `{"status":"success"}` after committing.
fn progress<F>(
    style: JsonStyle,
    lines: Vec<Value>,
    stream_requested: Option<bool>,
    commit: F,
) -> Response
where
    F: FnOnce() + Send + 'static,
{
    let success = json!({ "status": "success" });
    if !stream_requested.unwrap_or(true) {
        commit();
        return style.ok(&success);
    }
    let lines = stream::iter(
        lines
            .into_iter()
            .map(move |line| Ok(ndjson_line(style, &line))),
    );
    let finish = stream::once(async move {
        commit();
        Ok::<_, std::io::Error>(ndjson_line(style, &success))
    });
    (
        [(header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(lines.chain(finish)),
    )
        .into_response()
}

/// Layer transfer lines (`pulling <short digest>` or `pushing ...`) for a model.
fn layer_lines(verb: &str, entry: &ModelEntry) -> Vec<Value> {
    let layers = [
        ("weights", entry.size),
        ("template", 1_429),
        ("params", 110),
    ];
    let mut lines = Vec::new();
    for (kind, total) in layers {
        let digest = hex_sha256(format!("{}/{kind}", entry.name).as_bytes());
        let status = format!("{verb} {}", &digest[..12]);
        for completed in [0, total / 2, total] {
            lines.push(json!({
                "status": status,
                "digest": format!("sha256:{digest}"),
                "total": total,
                "completed": completed,
            }));
        }
    }
    lines
}

pub(super) async fn pull(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    let request = match parse_json::<NamedRequest>(&body) {
        Ok(request) => request,
        Err(error) => return error.native(sim.config.json_style),
    };
    let name = match request.model_name() {
        Ok(name) => name,
        Err(error) => return error.native(sim.config.json_style),
    };
    let entry = ModelEntry::fabricate(name);
    let mut lines = vec![json!({ "status": "pulling manifest" })];
    lines.extend(layer_lines("pulling", &entry));
    lines.push(json!({ "status": "verifying sha256 digest" }));
    lines.push(json!({ "status": "writing manifest" }));
    let style = sim.config.json_style;
    progress(style, lines, request.stream, move || {
        sim.catalog.insert(entry)
    })
}

pub(super) async fn push(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    let request = match parse_json::<NamedRequest>(&body) {
        Ok(request) => request,
        Err(error) => return error.native(sim.config.json_style),
    };
    let entry = match request.model_name().and_then(|name| {
        sim.catalog
            .get(&name)
            .ok_or_else(|| model_not_found(request.requested()))
    }) {
        Ok(entry) => entry,
        Err(error) => return error.native(sim.config.json_style),
    };
    let mut lines = vec![json!({ "status": "retrieving manifest" })];
    lines.extend(layer_lines("pushing", &entry));
    lines.push(json!({ "status": "pushing manifest" }));
    progress(sim.config.json_style, lines, request.stream, || {})
}

#[derive(Deserialize)]
struct CreateRequest {
    model: Option<String>,
    name: Option<String>,
    from: Option<String>,
    files: Option<BTreeMap<String, String>>,
    template: Option<String>,
    system: Option<String>,
    stream: Option<bool>,
}

pub(super) async fn create(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    match plan_create(&sim, &body) {
        Ok((lines, entry, stream_requested)) => {
            let style = sim.config.json_style;
            progress(style, lines, stream_requested, move || {
                sim.catalog.insert(entry)
            })
        }
        Err(error) => error.native(sim.config.json_style),
    }
}

/// Validates a create and works out its progress lines and resulting model.
fn plan_create(
    sim: &SimState,
    body: &[u8],
) -> Result<(Vec<Value>, ModelEntry, Option<bool>), ApiError> {
    let request: CreateRequest = parse_json(body)?;
    let requested = request
        .model
        .as_deref()
        .filter(|model| !model.is_empty())
        .or(request.name.as_deref())
        .unwrap_or_default();
    let name = ModelName::parse(requested).ok_or_else(model_required)?;
    let files = request.files.unwrap_or_default();
    if request.from.is_none() && files.is_empty() {
        return Err(ApiError::bad_request(
            "neither 'from' or 'files' was specified",
        ));
    }
    let mut lines = Vec::new();
    let mut entry = ModelEntry::fabricate(name.clone());
    if let Some(from) = request.from.as_deref() {
        let base_name = ModelName::parse(from).ok_or_else(model_required)?;
        let base = sim
            .catalog
            .get(&base_name)
            .ok_or_else(|| model_not_found(from))?;
        lines.push(json!({ "status": format!("using existing layer sha256:{}", base.digest) }));
        entry.details = base.details.clone();
        entry.details.parent_model = base.name.to_string();
        entry.size = base.size;
        entry.embedding_only = base.embedding_only;
    }
    for digest in files.values() {
        if !is_valid_digest(digest) || !sim.catalog.has_blob(digest) {
            return Err(ApiError::bad_request(format!("missing blob {digest}")));
        }
        lines.push(json!({ "status": format!("using existing layer {digest}") }));
    }
    for text in [request.template, request.system].into_iter().flatten() {
        let digest = hex_sha256(text.as_bytes());
        lines.push(json!({ "status": format!("creating new layer sha256:{digest}") }));
    }
    lines.push(json!({ "status": "writing manifest" }));
    entry.digest = hex_sha256(format!("{name}/{files:?}/{lines:?}").as_bytes());
    Ok((lines, entry, request.stream))
}

#[derive(Deserialize)]
struct CopyRequest {
    source: Option<String>,
    destination: Option<String>,
}

pub(super) async fn copy(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    let result = parse_json::<CopyRequest>(&body).and_then(|request| {
        let source_raw = request.source.unwrap_or_default();
        let source = ModelName::parse(&source_raw)
            .ok_or_else(|| ApiError::bad_request("source is required"))?;
        let destination = request
            .destination
            .as_deref()
            .and_then(ModelName::parse)
            .ok_or_else(|| ApiError::bad_request("destination is required"))?;
        if sim.catalog.copy(&source, destination) {
            Ok(())
        } else {
            Err(model_not_found(&source_raw))
        }
    });
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => error.native(sim.config.json_style),
    }
}

pub(super) async fn delete(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    let result = parse_json::<NamedRequest>(&body).and_then(|request| {
        let name = request.model_name()?;
        if sim.catalog.remove(&name) {
            Ok(())
        } else {
            Err(model_not_found(request.requested()))
        }
    });
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => error.native(sim.config.json_style),
    }
}

/// Ollama accepts `sha256-<hex>` in blob paths as well as `sha256:<hex>`.
fn normalize_digest(raw: &str) -> Option<String> {
    let digest = match raw.strip_prefix("sha256-") {
        Some(hex) => format!("sha256:{hex}"),
        None => raw.to_string(),
    };
    is_valid_digest(&digest).then_some(digest)
}

pub(super) async fn blob_exists(
    State(sim): State<Arc<SimState>>,
    Path(digest): Path<String>,
) -> StatusCode {
    match normalize_digest(&digest) {
        Some(digest) if sim.catalog.has_blob(&digest) => StatusCode::OK,
        Some(_) => StatusCode::NOT_FOUND,
        None => StatusCode::BAD_REQUEST,
    }
}

/// Receives a blob. The body can be gigabytes: it is hashed as it streams in and never
/// held whole.
pub(super) async fn upload_blob(
    State(sim): State<Arc<SimState>>,
    Path(digest): Path<String>,
    body: Body,
) -> Response {
    let Some(expected) = normalize_digest(&digest) else {
        return ApiError::bad_request("invalid digest format").native(sim.config.json_style);
    };
    if sim.catalog.has_blob(&expected) {
        return StatusCode::OK.into_response();
    }
    let mut hasher = Sha256::new();
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => hasher.update(&bytes),
            Err(error) => {
                return ApiError::bad_request(format!("reading blob: {error}"))
                    .native(sim.config.json_style);
            }
        }
    }
    let actual = format!("sha256:{}", hex(&hasher.finalize()));
    if actual != expected {
        return ApiError::bad_request(format!(
            "digest mismatch, expected \"{expected}\", got \"{actual}\""
        ))
        .native(sim.config.json_style);
    }
    sim.catalog.add_blob(expected);
    StatusCode::CREATED.into_response()
}
