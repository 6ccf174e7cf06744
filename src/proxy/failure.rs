//! Every way a request ends without a normal answer, told in the client's dialect:
//! refusals before proxying (400/404/503), a busy backend retried elsewhere, and
//! upstream failures — as an error response, or as a last error line when the stream
//! had already started.

use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::routing::{NoRoute, QueueError};

use super::admission::Refusal;
use super::attempt::Outcome;
use super::{respond, CorralProxy, RequestCtx};

impl CorralProxy {
    /// Tells the client why its request will not be proxied.
    pub(super) async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<()> {
        session.set_keepalive(None);
        let retry_after = self.pool.load().config.routing.retry_after.as_secs();
        let (status, message) = match refusal {
            Refusal::ClientGone => {
                ctx.status = 0;
                return Ok(());
            }
            Refusal::BadRequest(m) => (400, m),
            Refusal::NoRoute(e @ NoRoute::ModelNotFound(_)) => (404, e.to_string()),
            Refusal::NoRoute(e @ NoRoute::UnknownBackend(_)) => (400, e.to_string()),
            Refusal::NoRoute(e) => (503, e.to_string()),
            Refusal::Queue(e @ (QueueError::Full | QueueError::Timeout(_))) => (503, e.to_string()),
            Refusal::Queue(QueueError::NoRoute(e)) => (503, e.to_string()),
        };
        ctx.status = status;
        respond::write_error(
            session,
            ctx.endpoint.is_openai(),
            status,
            &message,
            retry_after,
        )
        .await
    }

    /// The end of `fail_to_proxy`: what the client is told when proxying failed.
    pub(super) async fn answer_failure(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let backend = ctx.backend_name().to_string();
        let stall = ctx.attempt.as_mut().and_then(|a| a.stall.as_mut());
        let stalled = stall.as_ref().is_some_and(|s| s.fired());
        if let Some(stall) = stall {
            stall.disarm();
        }
        let no_reuse = |code| FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        };
        let client_gone = *e.esource() == ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
            );
        let table = self.pool.snapshot();
        if client_gone {
            if let Some(attempt) = ctx.attempt.as_mut() {
                attempt.settle(&table, Outcome::Neutral);
            }
            return no_reuse(0);
        }
        let config = table.config.clone();

        if session.response_written().is_some() {
            // The client already has a 200 and part of the stream: end it with an error
            // line rather than a silent truncation.
            let msg = if stalled {
                format!(
                    "backend '{backend}' stalled: no data for {}",
                    humantime::format_duration(config.timeouts.idle)
                )
            } else {
                format!(
                    "backend '{backend}' failed mid-stream: {}",
                    e.etype().as_str()
                )
            };
            if let Some(attempt) = ctx.attempt.as_mut() {
                attempt.settle(&table, Outcome::Failed(&msg));
            }
            // The torn fragment never reaches the client: the error is a line of its own.
            let dropped = ctx.framer.discard();
            if dropped > 0 {
                tracing::debug!(
                    bytes = dropped,
                    "dropped a partial line the backend broke off"
                );
            }
            let error = respond::stream_error_chunk(ctx.sse, &msg);
            let separator = ctx.framer.separator();
            let chunk = if separator.is_empty() {
                error
            } else {
                bytes::Bytes::from([separator, &error[..]].concat())
            };
            if let Err(we) = session.write_response_body(Some(chunk), true).await {
                tracing::debug!("could not end the stream with an error: {we}");
            }
            return no_reuse(ctx.status);
        }

        let (code, msg) = match e.etype() {
            // The client's body stalled: Pingora's per-read timeout, which corral cuts at
            // the whole-body deadline.
            ErrorType::ReadTimedout if *e.esource() == ErrorSource::Downstream => (
                408,
                match ctx.body_deadline.filter(|d| d.passed()) {
                    Some(d) => d.message(),
                    None => format!(
                        "request body stalled: no data for {} (timeouts.client)",
                        humantime::format_duration(config.timeouts.client)
                    ),
                },
            ),
            ErrorType::HTTPStatus(code) => (
                *code,
                e.context
                    .as_ref()
                    .map_or_else(|| "request failed".to_string(), |c| c.to_string()),
            ),
            ErrorType::ReadTimedout => (
                504,
                format!(
                    "backend '{backend}' sent no response within {}",
                    humantime::format_duration(config.timeouts.first_byte)
                ),
            ),
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::SocketError => (
                502,
                format!("backend '{backend}' unreachable: {}", e.etype().as_str()),
            ),
            _ if *e.esource() == ErrorSource::Downstream => {
                (400, format!("bad request: {}", e.etype().as_str()))
            }
            _ => (
                502,
                format!("backend '{backend}' failed: {}", e.etype().as_str()),
            ),
        };
        // corral's own refusals (HTTPStatus) come after the attempt was settled; a
        // client's own bad framing is not the backend's fault either.
        if code == 504 || (code == 502 && *e.esource() != ErrorSource::Downstream) {
            if let Some(attempt) = ctx.attempt.as_mut() {
                attempt.settle(&table, Outcome::Failed(&msg));
            }
        }
        ctx.status = code;
        let openai = ctx.endpoint.is_openai();
        let retry_after = config.routing.retry_after.as_secs();
        if let Err(we) = respond::write_error(session, openai, code, &msg, retry_after).await {
            tracing::debug!("could not send the error response: {we}");
        }
        no_reuse(code)
    }
}

/// Error type of a "server busy" answer being retried on another backend.
pub(super) const BUSY: &str = "backend busy";

impl CorralProxy {
    /// Ollama answered 503 "busy" before doing any work: when another backend can take
    /// the request now, mark this one busy and retry there instead of passing the 503 on.
    pub(super) fn retry_busy(&self, session: &Session, ctx: &mut RequestCtx) -> Option<Box<Error>> {
        let table = self.pool.snapshot();
        if ctx.tried.len() > table.config.routing.max_retries
            || session.as_ref().retry_buffer_truncated()
        {
            return None;
        }
        let attempt = ctx.attempt.as_mut()?;
        attempt.settle(&table, Outcome::Busy);
        let state = attempt.pick.backend.state.clone();
        let next = self
            .router
            .pick_backend(&table, &ctx.route, &ctx.tried)
            .ok()?;
        tracing::debug!(from = %state.name, to = next.backend.name(), "backend busy, retrying");
        ctx.planned = Some(self.reserve(next));
        Some(Error::explain(
            ErrorType::Custom(BUSY),
            format!("backend '{}' busy", state.name),
        ))
    }
}

pub(super) fn no_route_error(e: &NoRoute) -> Box<Error> {
    let status = match e {
        NoRoute::ModelNotFound(_) => 404,
        NoRoute::UnknownBackend(_) => 400,
        NoRoute::NoHealthy | NoRoute::Full => 503,
    };
    Error::explain(ErrorType::HTTPStatus(status), e.to_string())
}
