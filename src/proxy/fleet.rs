//! Operations that apply to several backends at once: deleting or copying a model on
//! every box that holds it, and pulling onto every box (`X-Corral-Target: all`).
//! corral sends the same request to each and answers for all of them; pull progress
//! streams back as it comes, each line tagged with its backend.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::pool::Backend;
use crate::routing::{Need, NoRoute};

use super::endpoint::Endpoint;
use super::{respond, CorralProxy, RequestCtx};

/// Fan-out request bodies are small JSON objects; anything bigger is refused.
const MAX_BODY: usize = 1024 * 1024;

impl CorralProxy {
    /// The backends a fleet operation goes to, or `None` when the request is proxied
    /// to one backend as usual.
    pub(super) fn fan_out_targets(
        &self,
        ctx: &RequestCtx,
    ) -> Option<Result<Vec<Arc<Backend>>, NoRoute>> {
        let table = self.pool.load();
        let healthy = || table.backends.iter().filter(|b| b.is_available()).cloned();
        let targets: Vec<Arc<Backend>> = match (&ctx.endpoint, ctx.target_all, &ctx.route.need) {
            (Endpoint::Pull | Endpoint::Delete | Endpoint::Copy, true, _) => healthy().collect(),
            (Endpoint::Delete | Endpoint::Copy, false, Need::Model(m)) => {
                let holding: Vec<_> = healthy().filter(|b| b.state.has_model(m)).collect();
                if holding.is_empty() {
                    let err = if table.backends.iter().any(|b| b.state.has_model(m)) {
                        NoRoute::NoHealthy
                    } else {
                        NoRoute::ModelNotFound(m.clone())
                    };
                    return Some(Err(err));
                }
                holding
            }
            _ => return None,
        };
        if targets.is_empty() {
            return Some(Err(NoRoute::NoHealthy));
        }
        Some(Ok(targets))
    }

    /// The whole request body: what sniffing already buffered plus the rest.
    async fn whole_body(&self, session: &mut Session) -> Result<Option<Bytes>> {
        let mut body = BytesMut::new();
        if let Some(buffered) = session.as_ref().get_retry_buffer() {
            body.extend_from_slice(&buffered);
        }
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Ok(None);
            }
        }
        Ok(Some(body.freeze()))
    }

    /// Sends the request to every target and answers for all of them.
    pub(super) async fn fan_out(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        targets: Vec<Arc<Backend>>,
    ) -> Result<()> {
        let Some(body) = self.whole_body(session).await? else {
            return respond::write_error(session, false, 413, "request body too large", 0).await;
        };
        let req = session.req_header();
        let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let path = req.uri.path().to_string();
        let names = targets
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(",");
        let stream = ctx.endpoint == Endpoint::Pull
            && serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("stream").and_then(Value::as_bool))
                != Some(false);
        let (tx, mut rx) = mpsc::channel::<(String, Result<Value, String>, bool)>(64);
        for b in targets {
            let (client, tx, body, method, path) = (
                self.fleet_client.clone(),
                tx.clone(),
                body.clone(),
                method.clone(),
                path.clone(),
            );
            tokio::spawn(async move { forward(&client, &b, method, &path, body, tx).await });
        }
        drop(tx);

        // Pull progress streams; everything else is answered once all have answered.
        let mut resp = ResponseHeader::build(200, Some(3))?;
        resp.insert_header("X-Corral-Backend", names.as_str())?;
        resp.insert_header("X-Corral-Route", "fleet")?;
        if stream {
            resp.insert_header("Content-Type", "application/x-ndjson")?;
            session.write_response_header(Box::new(resp), false).await?;
            while let Some((backend, line, _)) = rx.recv().await {
                let mut v = line.unwrap_or_else(|e| json!({ "error": e }));
                if let Value::Object(m) = &mut v {
                    m.insert("backend".into(), Value::String(backend));
                }
                session
                    .write_response_body(Some(Bytes::from(format!("{v}\n"))), false)
                    .await?;
            }
            ctx.status = 200;
            return session.write_response_body(None, true).await;
        }
        let mut failure: Option<(String, String)> = None;
        while let Some((backend, line, last)) = rx.recv().await {
            match line {
                Err(e) if failure.is_none() => failure = Some((backend, e)),
                Ok(v) if last && failure.is_none() => {
                    if let Some(e) = v.get("error").and_then(Value::as_str) {
                        failure = Some((backend, e.to_string()));
                    }
                }
                _ => {}
            }
        }
        self.pool.changed.notify_one();
        match failure {
            None => {
                ctx.status = 200;
                let body = if ctx.endpoint == Endpoint::Pull {
                    json!({"status": "success"}).to_string()
                } else {
                    String::new()
                };
                resp.insert_header("Content-Length", body.len().to_string())?;
                if !body.is_empty() {
                    resp.insert_header("Content-Type", "application/json; charset=utf-8")?;
                }
                session
                    .write_response_header(Box::new(resp), body.is_empty())
                    .await?;
                if !body.is_empty() {
                    session
                        .write_response_body(Some(Bytes::from(body)), true)
                        .await?;
                }
                Ok(())
            }
            Some((backend, e)) => {
                ctx.status = 502;
                let msg = format!("backend '{backend}': {e}");
                respond::write_error(session, false, 502, &msg, 0).await
            }
        }
    }
}

/// Sends one copy of the request and reports each NDJSON line (or the single JSON
/// answer) back, tagged with the backend; the last report carries `true`.
async fn forward(
    client: &reqwest::Client,
    backend: &Backend,
    method: reqwest::Method,
    path: &str,
    body: Bytes,
    tx: mpsc::Sender<(String, Result<Value, String>, bool)>,
) {
    let name = backend.name().to_string();
    let url = format!("{}{path}", backend.config.url.base());
    let resp = match client
        .request(method, url)
        .body(body)
        .header("Content-Type", "application/json")
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send((name, Err(e.to_string()), true)).await;
            return;
        }
    };
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| format!("status {status}"));
        let _ = tx.send((name, Err(msg), true)).await;
        return;
    }
    let mut lines = resp.bytes_stream();
    let mut partial = Vec::new();
    let mut last: Option<Value> = None;
    while let Some(chunk) = lines.next().await {
        let Ok(chunk) = chunk else {
            let _ = tx.send((name, Err("connection lost".into()), true)).await;
            return;
        };
        partial.extend_from_slice(&chunk);
        while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=nl).collect();
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                if let Some(prev) = last.replace(v) {
                    let _ = tx.send((name.clone(), Ok(prev), false)).await;
                }
            }
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&partial) {
        if let Some(prev) = last.replace(v) {
            let _ = tx.send((name.clone(), Ok(prev), false)).await;
        }
    }
    let _ = tx.send((name, Ok(last.unwrap_or(Value::Null)), true)).await;
}
