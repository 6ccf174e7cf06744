//! Response plumbing shared by the native and OpenAI routes: error bodies in both
//! shapes, lenient JSON parsing, NDJSON lines and SSE events in the sim's JSON style,
//! and streaming bodies that (like Ollama) write no header until their first chunk
//! exists.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{stream, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::json_style::JsonStyle;

pub(super) const NDJSON: &str = "application/x-ndjson";
pub(super) const EVENT_STREAM: &str = "text/event-stream";

/// An error answered before any body byte was written: the crate's one `ApiError`,
/// written in Ollama's shapes (`native`, `openai`) rather than the admin API's.
pub(super) use crate::api_error::ApiError;

pub(super) fn model_required() -> ApiError {
    ApiError::bad_request("model is required")
}

pub(super) fn model_not_found(requested: &str) -> ApiError {
    ApiError::not_found(format!("model '{requested}' not found"))
}

/// The bodies Ollama answers errors with; the admin API's `code` is not part of them.
pub(super) trait OllamaShape {
    /// Ollama's own shape: `{"error":"..."}`.
    fn native(self, style: JsonStyle) -> Response;
    /// The `/v1` shape.
    fn openai(self, style: JsonStyle) -> Response;
}

impl OllamaShape for ApiError {
    fn native(self, style: JsonStyle) -> Response {
        style.response(self.status, &json!({ "error": self.message }))
    }

    /// The `type` follows Ollama's `openai.NewError`: 400 is `invalid_request_error`,
    /// 404 `not_found_error`, anything else `api_error`.
    fn openai(self, style: JsonStyle) -> Response {
        let error_type = match self.status {
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            _ => "api_error",
        };
        let body = json!({
            "error": {"message": self.message, "type": error_type, "param": null, "code": null}
        });
        style.response(self.status, &body)
    }
}

/// Parses a request body the way Ollama's handlers do: any content type, an empty body
/// is `missing request body`, and a decode error is a 400 carrying the parser's message.
pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing request body"));
    }
    serde_json::from_slice(body).map_err(|error| ApiError::bad_request(error.to_string()))
}

/// One NDJSON line.
pub(super) fn ndjson_line(style: JsonStyle, value: &impl Serialize) -> Bytes {
    let mut line = style.line(value);
    line.push(b'\n');
    Bytes::from(line)
}

/// One server-sent event carrying JSON.
pub(super) fn sse_event(style: JsonStyle, value: &impl Serialize) -> Bytes {
    let json = style.line(value);
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(&json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// The error a body stream yields to make hyper abort the connection mid-body: no final
/// chunk, no chunked terminator, just a closed socket.
pub(super) fn connection_killer() -> io::Error {
    io::Error::other("simulated backend death mid-stream")
}

/// Waits for the stream's first chunk (queue wait, model load, prompt eval all happen
/// before it) and only then returns the response, so headers go out with the first
/// chunk the way Ollama's do.
pub(super) async fn respond_on_first_chunk<S>(content_type: &'static str, chunks: S) -> Response
where
    S: Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
{
    let mut chunks = Box::pin(chunks);
    let body = match chunks.next().await {
        Some(first) => Body::from_stream(stream::once(async move { first }).chain(chunks)),
        None => Body::empty(),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A response that never completes: hyper aborts the connection when the body fails,
/// so the client sees the connection close with no (or a cut-off) response, the way a
/// box that dies while computing a single-object answer looks.
pub(super) fn dropped_connection() -> Response {
    let chunks = stream::iter([Err::<Bytes, _>(connection_killer())]);
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// `created_at` as Ollama prints it (RFC 3339, nanoseconds, UTC).
pub(super) fn timestamp_now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

pub(super) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

pub(super) fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}
