//! The Pingora `ProxyHttp` implementation: classify, sniff, answer locally or route,
//! rewrite headers, stream back, and turn every failure into an answer the client's
//! library understands.

mod admission;
mod ctx;
pub mod endpoint;
mod fleet;
mod local;
mod observe;
mod outcome;
mod respond;
pub mod sniff;
mod stall;

pub use ctx::RequestCtx;
pub use endpoint::Endpoint;
pub use local::entry_name;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use serde_json::json;

use crate::model::ModelName;
use crate::pool::{InFlight, Pool, SlotWatcher};
use crate::routing::{AdmissionQueue, NoRoute, QueueError, Router};
use admission::Refusal;

pub struct CorralProxy {
    pool: Arc<Pool>,
    router: Router,
    queue: Arc<AdmissionQueue>,
    /// For fleet operations corral sends itself (delete/copy everywhere, pull to all).
    fleet_client: reqwest::Client,
}

impl CorralProxy {
    pub fn new(pool: Arc<Pool>, queue: Arc<AdmissionQueue>) -> CorralProxy {
        CorralProxy {
            pool,
            router: Router::default(),
            queue,
            fleet_client: reqwest::Client::new(),
        }
    }

    /// Answers the fleet-wide endpoints from the probes' view of the backends.
    async fn answer_locally(&self, session: &mut Session, endpoint: &Endpoint) -> Result<()> {
        let table = self.pool.snapshot();
        match endpoint {
            Endpoint::Root => {
                respond::write_response(
                    session,
                    200,
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"Ollama is running"),
                    &[],
                )
                .await
            }
            Endpoint::Version => {
                let version = local::fleet_version(&table);
                respond::write_json(session, 200, &json!({ "version": version })).await
            }
            Endpoint::Tags => {
                let models = local::merged_models(&table, false);
                respond::write_json(session, 200, &json!({ "models": models })).await
            }
            Endpoint::Ps => {
                let models = local::merged_models(&table, true);
                respond::write_json(session, 200, &json!({ "models": models })).await
            }
            Endpoint::OpenAiModels => {
                respond::write_json(session, 200, &local::openai_models(&table)).await
            }
            Endpoint::OpenAiModel(name) => {
                let wanted = ModelName::new(name);
                let found = local::merged_models(&table, false)
                    .into_iter()
                    .find(|e| local::entry_name(e).is_some_and(|n| ModelName::new(n) == wanted));
                match found.as_ref().and_then(local::openai_model) {
                    Some(m) => respond::write_json(session, 200, &m).await,
                    None => {
                        let msg = format!("model '{name}' not found");
                        respond::write_error(session, true, 404, &msg, 0).await
                    }
                }
            }
            _ => Ok(()),
        }
    }

    /// Tells the client why its request will not be proxied.
    async fn refuse(
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
}

/// Error type of a "server busy" answer being retried on another backend.
const BUSY: &str = "backend busy";

impl CorralProxy {
    /// Ollama answered 503 "busy" before doing any work: when another backend can take
    /// the request now, mark this one busy and retry there instead of passing the 503 on.
    fn retry_busy(&self, session: &Session, ctx: &mut RequestCtx) -> Option<Box<Error>> {
        let config = self.pool.load().config.clone();
        if ctx.tried.len() > config.routing.max_retries || session.as_ref().retry_buffer_truncated()
        {
            return None;
        }
        let pick = ctx.current.as_ref()?;
        let state = &pick.backend.state;
        state
            .passive
            .record_busy(state.in_flight(), config.health.busy_backoff);
        let next = self
            .router
            .pick_backend(&self.pool.load(), &ctx.route, &ctx.tried)
            .ok()?;
        tracing::debug!(from = %state.name, to = next.backend.name(), "backend busy, retrying");
        ctx.planned = Some(next);
        ctx.outcome_recorded = false;
        Some(Error::explain(
            ErrorType::Custom(BUSY),
            format!("backend '{}' busy", state.name),
        ))
    }
}

fn no_route_error(e: &NoRoute) -> Box<Error> {
    let status = match e {
        NoRoute::ModelNotFound(_) => 404,
        NoRoute::UnknownBackend(_) => 400,
        NoRoute::NoHealthy | NoRoute::Full => 503,
    };
    Error::explain(ErrorType::HTTPStatus(status), e.to_string())
}

#[async_trait]
impl ProxyHttp for CorralProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.endpoint = Endpoint::classify(&req.method, req.uri.path());
        let client_timeout = self.pool.load().config.timeouts.client;
        session.set_keepalive(Some(client_timeout.as_secs().max(1)));
        session
            .as_downstream_mut()
            .set_read_timeout(Some(client_timeout));

        if ctx.endpoint.is_local() {
            let endpoint = ctx.endpoint.clone();
            self.answer_locally(session, &endpoint).await?;
            return Ok(true);
        }
        // Maintenance mode (`corral serving disable`): in-flight requests finish, new
        // ones are told to come back (or go to another replica).
        if !self.pool.is_serving() {
            session.set_keepalive(None);
            ctx.status = 503;
            let retry_after = self.pool.load().config.routing.retry_after.as_secs();
            let msg = "corral is in maintenance mode (serving disabled); retry later";
            respond::write_error(session, ctx.endpoint.is_openai(), 503, msg, retry_after).await?;
            return Ok(true);
        }
        if let Some(refusal) = self.classify_route(session, ctx).await? {
            self.refuse(session, ctx, refusal).await?;
            return Ok(true);
        }
        match self.fan_out_targets(ctx) {
            None => {}
            Some(Ok(targets)) => {
                self.fan_out(session, ctx, targets).await?;
                return Ok(true);
            }
            Some(Err(e)) => {
                self.refuse(session, ctx, Refusal::NoRoute(e)).await?;
                return Ok(true);
            }
        }
        match self.admit(session, ctx).await {
            Ok(pick) => {
                ctx.planned = Some(pick);
                Ok(false)
            }
            Err(refusal) => {
                self.refuse(session, ctx, refusal).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let table = self.pool.snapshot();
        let pick = match ctx.planned.take() {
            Some(p) => p,
            None => self
                .router
                .pick_backend(&table, &ctx.route, &ctx.tried)
                .map_err(|e| no_route_error(&e))?,
        };
        let state = pick.backend.state.clone();
        ctx.tried.push(pick.backend.name().to_string());
        let watcher: Arc<dyn SlotWatcher> = self.queue.clone();
        ctx.in_flight = Some(InFlight::acquire(&state, Some(watcher)));
        ctx.current = Some(pick);
        ctx.upstream_started = Some(Instant::now());
        let Some(addr) = state.addr.load_full() else {
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                format!("backend '{}' has no resolved address", state.name),
            ));
        };
        let t = &table.config.timeouts;
        let mut peer = HttpPeer::new(*addr, false, String::new());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.first_byte);
        peer.options.write_timeout = Some(t.idle);
        // Short pool idle: a stale pooled connection fails a POST that cannot be retried.
        peer.options.idle_timeout = Some(Duration::from_secs(30));
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.stall = stall::StallWatch::new(fd);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let config = self.pool.load().config.clone();
        if let Some(pick) = &ctx.current {
            outcome::record_failure(&pick.backend.state, &config, "connect failed");
        }
        // Nothing reached the backend: safe to try another, a bounded number of times.
        if ctx.tried.len() <= config.routing.max_retries {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let busy = *e.etype() == ErrorType::Custom(BUSY);
        let mut e = e.more_context(format!("Peer: {peer}"));
        // A pooled connection the backend had closed fails before the request reached
        // it; replaying is safe if nothing came back yet and the body is still buffered.
        // So is a "busy" refusal, which Ollama sends before doing any work.
        if session.response_written().is_some() || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else if busy {
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Ollama bound to loopback answers 403 to a Host that is not its own.
        if let Some(pick) = &ctx.current {
            upstream_request.insert_header("Host", pick.backend.config.url.authority.as_str())?;
        }
        upstream_request.remove_header(admission::TARGET_HEADER);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.status = upstream_response.status.as_u16();
        if ctx.status == 503 {
            if let Some(retry) = self.retry_busy(session, ctx) {
                return Err(retry);
            }
        }
        ctx.sse = upstream_response
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let idle = self.pool.load().config.timeouts.idle;
        if let Some(stall) = ctx.stall.as_mut() {
            stall.arm(idle);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !self.pool.load().config.routing.response_headers {
            return Ok(());
        }
        if let Some(pick) = &ctx.current {
            upstream_response.insert_header("X-Corral-Backend", pick.backend.name())?;
            upstream_response.insert_header("X-Corral-Route", pick.reason.as_str())?;
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(chunk) = body.as_ref() {
            if ctx.observer.feed(chunk) {
                ctx.first_token = Some(Instant::now());
            }
        }
        if let Some(stall) = ctx.stall.as_mut() {
            if end_of_stream {
                // Before Pingora returns the connection to its pool.
                stall.disarm();
            } else {
                stall.touch();
            }
        }
        if end_of_stream {
            ctx.observer.finish();
            // The backend's work is done: free its slot now, before the last bytes
            // reach the client, so a conversation's next turn finds its box free.
            ctx.in_flight = None;
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let backend = ctx.backend_name().to_string();
        let stalled = ctx.stall.as_ref().is_some_and(|s| s.fired());
        if let Some(stall) = ctx.stall.as_mut() {
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
        if client_gone {
            return no_reuse(0);
        }
        let config = self.pool.load().config.clone();

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
            if let Some(pick) = &ctx.current {
                outcome::record_failure(&pick.backend.state, &config, &msg);
                ctx.outcome_recorded = true;
            }
            let chunk = respond::stream_error_chunk(ctx.sse, &msg);
            if let Err(we) = session.write_response_body(Some(chunk), true).await {
                tracing::debug!("could not end the stream with an error: {we}");
            }
            return no_reuse(ctx.status);
        }

        let (code, msg) = match e.etype() {
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
        if code == 504 || code == 502 {
            if let (Some(pick), false) = (&ctx.current, ctx.outcome_recorded) {
                outcome::record_failure(&pick.backend.state, &config, &msg);
                ctx.outcome_recorded = true;
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

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.stall = None;
        outcome::settle(&self.pool.load().config, ctx, e);
        let changes_models = matches!(
            ctx.endpoint,
            Endpoint::Pull | Endpoint::Create | Endpoint::Copy | Endpoint::Delete
        );
        if changes_models && (200..300).contains(&ctx.status) {
            // Refresh inventories now rather than at the next interval.
            self.pool.changed.notify_one();
        }
        // Release the slot before the log line: a queued request can start now.
        ctx.in_flight = None;
        outcome::access_log(session, ctx, e);
    }
}
