//! Responses corral writes itself: local JSON answers and errors in the shape the client
//! expects (Ollama's `{"error"}` on `/api/*`, OpenAI's on `/v1/*`).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use serde_json::json;

/// An error body in the client's dialect.
pub(super) fn error_body(openai: bool, status: u16, message: &str) -> Bytes {
    let kind = match status {
        400 | 404 | 413 => "invalid_request_error",
        503 => "service_unavailable",
        _ => "api_error",
    };
    coded_error_body(openai, message, kind, None)
}

/// An error body with OpenAI's `type` and `code` chosen by the caller (Ollama's shape
/// has neither).
pub(super) fn coded_error_body(
    openai: bool,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Bytes {
    let v = if openai {
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    } else {
        json!({"error": message})
    };
    Bytes::from(v.to_string())
}

/// The line that ends a stream the backend broke off, so clients fail loudly instead of
/// waiting: one more NDJSON line for Ollama clients, an SSE event for OpenAI ones.
pub(super) fn stream_error_chunk(sse: bool, message: &str) -> Bytes {
    if sse {
        let v = json!({"error": {"message": message, "type": "api_error", "param": null, "code": null}});
        Bytes::from(format!("data: {v}\n\n"))
    } else {
        Bytes::from(format!("{}\n", json!({"error": message})))
    }
}

/// Writes a complete response. `HEAD` requests get the headers only.
pub(super) async fn write_response(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("Content-Type", content_type)?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    for (k, v) in extra {
        resp.insert_header(*k, v.as_str())?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

pub(super) async fn write_json(
    session: &mut Session,
    status: u16,
    value: &serde_json::Value,
) -> Result<()> {
    write_response(
        session,
        status,
        "application/json; charset=utf-8",
        Bytes::from(value.to_string()),
        &[],
    )
    .await
}

/// Writes an error; 503s say when to come back.
pub(super) async fn write_error(
    session: &mut Session,
    openai: bool,
    status: u16,
    message: &str,
    retry_after_secs: u64,
) -> Result<()> {
    let retry_after = [("Retry-After", retry_after_secs.max(1).to_string())];
    let extra: &[(&'static str, String)] = if status == 503 { &retry_after } else { &[] };
    write_response(
        session,
        status,
        "application/json; charset=utf-8",
        error_body(openai, status, message),
        extra,
    )
    .await
}

/// HTTP/1.0 has no chunked encoding: a chunked answer to a 1.0 client goes out
/// close-delimited instead (no length; the connection closes at its end).
pub(super) fn fit_to_http10(session: &mut Session, resp: &mut ResponseHeader) {
    if session.req_header().version != http::Version::HTTP_10
        || !resp.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        return;
    }
    resp.remove_header(&http::header::TRANSFER_ENCODING);
    resp.remove_header(&http::header::CONTENT_LENGTH);
    session.set_keepalive(None);
}
