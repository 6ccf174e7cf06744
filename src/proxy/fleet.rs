//! Operations that change which models the boxes hold: deleting or copying a model on
//! every box that holds it, pulling onto every box (`X-Corral-Target: all`), and the
//! one-box forms (a pull onto the box that lacks the model, a create on the pinned box,
//! any of them with `X-Corral-Target: NAME`). corral sends the same request to each
//! box and answers for all of them; progress streams back as it comes, each line
//! tagged with its backend. Each box is re-probed before its part counts as done (see
//! `refresh`), so the next request already sees what it now holds.
//!
//! Each box gets the configured deadlines and a bounded answer (see `forward`); a box
//! that fails any of them is reported failed while the others' parts go ahead. The
//! per-box tasks live in a `JoinSet`, so when the client leaves they are dropped with
//! their connections.

mod forward;
mod lines;
mod refresh;
mod targets;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::body_deadline::{read_body_chunk, BodyDeadline};
use super::endpoint::Endpoint;
use super::{respond, CorralProxy, RequestCtx};
use forward::{BoxFailure, Event, Limits, Reporter};
use refresh::Refresh;
pub(super) use targets::FleetTargets;

/// Fan-out request bodies are small JSON objects; anything bigger is refused.
const MAX_BODY: usize = 1024 * 1024;

/// The client fleet operations use. Deadlines are per request, from the config current
/// when the operation starts (so a reload applies to the next one).
pub(super) fn client(trust: &crate::tls::BackendTrust) -> reqwest::Client {
    trust
        .client_builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

impl CorralProxy {
    /// The whole request body: what sniffing already buffered plus the rest.
    async fn whole_body(
        &self,
        session: &mut Session,
        deadline: Option<BodyDeadline>,
    ) -> Result<Option<Bytes>> {
        let mut body = BytesMut::new();
        if let Some(buffered) = session.as_ref().get_retry_buffer() {
            body.extend_from_slice(&buffered);
        }
        while let Some(chunk) = read_body_chunk(session, deadline).await? {
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
        targets: FleetTargets,
    ) -> Result<()> {
        let FleetTargets {
            backends: targets,
            reason,
        } = targets;
        let Some(body) = self.whole_body(session, ctx.body_deadline).await? else {
            return respond::write_error(session, false, 413, "request body too large", 0).await;
        };
        let req = session.req_header();
        let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let path = req.uri.path().to_string();
        let names: Vec<Arc<str>> = targets.iter().map(|b| Arc::from(b.name())).collect();
        // Like Ollama: pull and create stream progress unless told not to.
        let stream = matches!(ctx.endpoint, Endpoint::Pull | Endpoint::Create)
            && serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("stream").and_then(Value::as_bool))
                != Some(false);
        let config = self.pool.load().config.clone();
        let limits = Limits::new(&config.timeouts, stream);
        let (events, rx) = mpsc::channel(64);
        // Dropping this set (the client left, or a write to it failed) aborts every
        // box's task and closes its connection.
        let mut tasks = JoinSet::new();
        for (b, name) in targets.iter().zip(&names) {
            let request = self
                .fleet_client
                .request(method.clone(), format!("{}{path}", b.config.url.base()))
                .header("Content-Type", "application/json")
                .header("Via", super::hop::via_entry())
                .body(body.clone());
            let reporter = Reporter {
                name: name.clone(),
                stream,
                events: events.clone(),
                refresh: Refresh {
                    client: self.fleet_client.clone(),
                    backend: b.clone(),
                    timeout: config.health.timeout,
                },
            };
            tasks.spawn(reporter.run(request, limits));
        }
        drop(events);

        // Pull progress streams; everything else is answered once all have answered.
        let mut resp = ResponseHeader::build(200, Some(3))?;
        resp.insert_header("X-Corral-Backend", names.join(","))?;
        resp.insert_header("X-Corral-Route", reason)?;
        if stream {
            resp.insert_header("Content-Type", "application/x-ndjson")?;
            session
                .write_response_header(Box::new(resp.clone()), false)
                .await?;
        }
        let verdicts = relay(session, rx, stream).await?;
        // Each box was re-probed already; a full round also refreshes the metric
        // labels, whoever is still listening.
        self.pool.changed.notify_one();
        let Some(verdicts) = verdicts else {
            // The client is gone (as `Refusal::ClientGone`): nobody to answer.
            session.set_keepalive(None);
            ctx.status = 0;
            return Ok(());
        };
        if stream {
            ctx.status = 200;
            return session.write_response_body(None, true).await;
        }
        let failures: Vec<String> = names
            .iter()
            .filter_map(|name| {
                // A task that ended without a verdict (only a panic could) failed.
                let verdict = verdicts.iter().find(|(n, _)| n == name).map(|(_, v)| v);
                let error = match verdict {
                    Some(Ok(())) => return None,
                    Some(Err(e)) => e.as_str(),
                    None => "ended without an answer",
                };
                Some(format!("backend '{name}': {error}"))
            })
            .collect();
        if !failures.is_empty() {
            ctx.status = 502;
            return respond::write_error(session, false, 502, &failures.join("; "), 0).await;
        }
        ctx.status = 200;
        let with_status = matches!(ctx.endpoint, Endpoint::Pull | Endpoint::Create);
        answer_success(session, resp, with_status).await
    }
}

/// Passes the boxes' lines on to the client while streaming, and gathers each box's
/// verdict; `None` when the client left before all had answered.
async fn relay(
    session: &mut Session,
    mut rx: mpsc::Receiver<(Arc<str>, Event)>,
    stream: bool,
) -> Result<Option<Vec<(Arc<str>, Result<(), String>)>>> {
    let mut verdicts = Vec::new();
    loop {
        let (name, event) = tokio::select! {
            next = rx.recv() => match next {
                Some(event) => event,
                None => return Ok(Some(verdicts)),
            },
            _ = session.as_downstream_mut().read_body_or_idle(true) => return Ok(None),
        };
        let line = match event {
            Event::Line(v) => Some(v),
            Event::Done(verdict) => {
                // An Ollama `"error"` line was streamed already; a failure of corral's
                // own making gets a line of its own.
                let line = verdict
                    .as_ref()
                    .err()
                    .map(|e| json!({ "error": e.to_string() }));
                verdicts.push((name.clone(), box_verdict(verdict)));
                line
            }
        };
        if let (true, Some(mut v)) = (stream, line) {
            if let Value::Object(m) = &mut v {
                m.insert("backend".into(), Value::String(name.to_string()));
            }
            session
                .write_response_body(Some(Bytes::from(format!("{v}\n"))), false)
                .await?;
        }
    }
}

/// Every box did its part: Ollama's own answer for one box (a pull's or create's
/// final status, nothing for delete and copy).
async fn answer_success(
    session: &mut Session,
    mut resp: ResponseHeader,
    with_status: bool,
) -> Result<()> {
    let body = if with_status {
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

/// A box's part succeeded unless it failed or its last line is an Ollama `"error"`.
fn box_verdict(verdict: Result<Option<Value>, BoxFailure>) -> Result<(), String> {
    match verdict {
        Err(e) => Err(e.to_string()),
        Ok(Some(last)) => match last.get("error").and_then(Value::as_str) {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        },
        Ok(None) => Ok(()),
    }
}
