//! What a finished request teaches corral: passive health (failures eject, busy
//! answers shrink capacity, successes clear probation), residency and timing learned
//! from the answer, and the access log line.

use pingora::proxy::Session;
use pingora::Error;

use crate::pool::RoutingTable;

use super::access_line::AccessLine;
use super::attempt::Outcome;
use super::endpoint::Endpoint;
use super::RequestCtx;

/// Generation endpoints whose stream must end with a final `done` chunk.
fn streams_to_done(endpoint: &Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::Generate | Endpoint::Chat | Endpoint::OpenAiChat | Endpoint::OpenAiCompletions
    )
}

/// Settles the last attempt when nothing earlier did: judged by what the backend
/// answered, not by what corral told the client.
pub(super) fn settle(table: &RoutingTable, ctx: &mut RequestCtx, error: Option<&Error>) {
    let Some(attempt) = ctx.attempt.as_mut() else {
        return;
    };
    if attempt.is_settled() {
        return;
    }
    let client_left = error.is_some_and(|e| *e.esource() == pingora::ErrorSource::Downstream);
    let outcome = match attempt.status {
        _ if client_left => Outcome::Neutral,
        // No answer from the backend and no failure reported: nothing to learn.
        None => Outcome::Neutral,
        Some(503) => Outcome::Busy,
        Some(500..=599) => Outcome::Failed("error status"),
        Some(200..=299) if error.is_some() => Outcome::Failed("answer cut short"),
        // Ollama's own error line after a 200: the runner failed.
        Some(200..=299) if ctx.observer.saw_error => Outcome::Failed("error line in the answer"),
        Some(200..=299) if streams_to_done(&ctx.endpoint) && !ctx.observer.saw_done => {
            let o = &ctx.observer;
            if o.frames > 0 && o.skipped_bytes == 0 {
                // Every byte parsed as the protocol: a dialect without a final chunk.
                Outcome::Unexpected
            } else {
                // The body ended inside an object, or was not the protocol at all.
                Outcome::Failed("answer ended inside a line")
            }
        }
        Some(200..=299) => Outcome::Success {
            stats: ctx.observer.stats.as_ref(),
        },
        Some(_) => Outcome::Neutral,
    };
    attempt.settle(table, outcome);
}

/// One structured line per request, and the request's metrics.
pub(super) fn access_log(session: &Session, ctx: &RequestCtx, error: Option<&Error>) {
    let status = session
        .response_written()
        .map_or(ctx.status, |r| r.status.as_u16());
    record_metrics(ctx, status);
    let since_start = |t: std::time::Instant| t.duration_since(ctx.started);
    let stats = ctx.observer.stats.as_ref();
    let req = session.req_header();
    AccessLine {
        method: req.method.as_str(),
        path: req.uri.path(),
        endpoint: ctx.endpoint.label(),
        model: ctx.model.as_deref().unwrap_or("-"),
        client: ctx.client_name(),
        backend: ctx.backend_name(),
        route: ctx.pick().map_or("-", |p| p.reason.as_str()),
        status,
        attempts: ctx.tried.len(),
        queued_ms: ctx.queued_ms,
        ttft: ctx.first_token.map(since_start),
        prompt_tokens: stats.map(|s| s.prompt_tokens),
        completion_tokens: stats.map(|s| s.completion_tokens),
        duration: ctx.started.elapsed(),
        error: error.map(|e| e.etype().as_str()),
    }
    .emit();
}

/// Feeds the finished request to the Prometheus metrics: only figures the context
/// already holds, no allocation.
fn record_metrics(ctx: &RequestCtx, status: u16) {
    let stats = ctx.observer.stats.as_ref();
    crate::metrics::global().observe_request(&crate::metrics::RequestRecord {
        backend: ctx.pick().map(|p| p.backend.name()),
        model: ctx.model_name(),
        endpoint: ctx.endpoint.label(),
        status,
        duration: ctx.started.elapsed(),
        ttft: ctx.first_token.map(|t| t.duration_since(ctx.started)),
        queue_wait: ctx.queued_ms.map(std::time::Duration::from_millis),
        tokens: stats.map(|s| crate::metrics::TokenStats {
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            completion_ns: s.completion_ns,
            load_ns: s.load_ns,
        }),
    });
}
