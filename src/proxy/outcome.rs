//! What a finished request teaches corral: passive health (failures eject, busy
//! answers shrink capacity, successes clear probation), residency and timing learned
//! from the answer, and the access log line.

use pingora::proxy::Session;
use pingora::Error;

use crate::config::Config;
use crate::pool::BackendState;

use super::endpoint::Endpoint;
use super::RequestCtx;

/// Counts a failed request against `backend`; ejects it when that makes too many in a row.
pub fn record_failure(backend: &BackendState, config: &Config, why: &str) {
    if let Some(t) = backend.passive.record_failure(config.health.eject_policy()) {
        crate::metrics::global().backend_ejected(&backend.name);
        tracing::warn!(
            backend = %backend.name,
            reason = why,
            ejected_for = %humantime::format_duration(t),
            "backend ejected"
        );
    }
}

/// Generation endpoints whose stream must end with a final `done` chunk.
fn streams_to_done(endpoint: &Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::Generate | Endpoint::Chat | Endpoint::OpenAiChat | Endpoint::OpenAiCompletions
    )
}

/// Feeds the request's outcome to the backend's live state, once.
pub fn settle(config: &Config, ctx: &mut RequestCtx, error: Option<&Error>) {
    let Some(pick) = &ctx.current else { return };
    if ctx.outcome_recorded {
        return;
    }
    ctx.outcome_recorded = true;
    let state = &pick.backend.state;
    let client_left = error.is_some_and(|e| *e.esource() == pingora::ErrorSource::Downstream);
    match ctx.status {
        // A busy box refused work quickly: it must not look idle.
        503 => state
            .passive
            .record_busy(state.in_flight(), config.health.busy_backoff),
        500..=599 => record_failure(state, config, "error status"),
        200..=299 if client_left => {}
        200..=299 if streams_to_done(&ctx.endpoint) && !ctx.observer.saw_done => {
            record_failure(state, config, "stream ended before done")
        }
        200..=299 => {
            state.passive.record_success();
            if let Some(model) = ctx.model_name().filter(|_| ctx.endpoint.is_inference()) {
                // It answered, so the model is loaded there now.
                state.learn_resident(model);
            }
            if let Some(stats) = &ctx.observer.stats {
                // Sub-100 ms "loads" are a resident model being touched, not a load.
                if stats.load_ns > 100_000_000 {
                    state.observe_load(stats.load_ns / 1_000_000);
                }
            }
            if let Some(t) = ctx.upstream_started {
                state.observe_service(t.elapsed().as_millis() as u64);
            }
        }
        _ => {}
    }
}

/// One structured line per request, and the request's metrics.
pub fn access_log(session: &Session, ctx: &RequestCtx, error: Option<&Error>) {
    let status = session
        .response_written()
        .map_or(ctx.status, |r| r.status.as_u16());
    record_metrics(ctx, status);
    let ms = |t: std::time::Instant| t.duration_since(ctx.started).as_secs_f64() * 1000.0;
    let stats = ctx.observer.stats.as_ref();
    tracing::info!(
        target: "corral::access",
        method = %session.req_header().method,
        path = %session.req_header().uri.path(),
        endpoint = ctx.endpoint.label(),
        model = ctx.model.as_deref().unwrap_or("-"),
        backend = ctx.backend_name(),
        route = ctx.current.as_ref().map_or("-", |p| p.reason.as_str()),
        status,
        attempts = ctx.tried.len(),
        queued_ms = ctx.queued_ms,
        ttft_ms = ctx.first_token.map(ms),
        prompt_tokens = stats.map(|s| s.prompt_tokens),
        completion_tokens = stats.map(|s| s.completion_tokens),
        duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        error = error.map(|e| e.etype().as_str()),
        "request"
    );
}

/// Feeds the finished request to the Prometheus metrics: only figures the context
/// already holds, no allocation.
fn record_metrics(ctx: &RequestCtx, status: u16) {
    let stats = ctx.observer.stats.as_ref();
    crate::metrics::global().observe_request(&crate::metrics::RequestRecord {
        backend: ctx.current.as_ref().map(|p| p.backend.name()),
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
