//! The Pingora `ProxyHttp` implementation: classify, sniff, answer locally or route,
//! rewrite headers, stream back, and turn every failure into an answer the client's
//! library understands.

pub mod access_line;
mod admission;
mod attempt;
mod body_deadline;
mod client_error;
mod client_keys;
mod ctx;
pub mod endpoint;
mod failure;
mod fleet;
mod framing;
mod header_deadline;
mod hop;
mod local;
pub mod observe;
pub mod outcome;
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
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;
use pingora::{Error, ErrorType};

use crate::pool::Pool;
use crate::routing::{AdmissionQueue, DemandTable, Router};
use admission::Refusal;
use attempt::{Attempt, Outcome};
use failure::{no_route_error, BUSY};

pub struct CorralProxy {
    pool: Arc<Pool>,
    router: Router,
    queue: Arc<AdmissionQueue>,
    /// For fleet operations corral sends itself (delete/copy everywhere, pull to all).
    fleet_client: reqwest::Client,
}

impl CorralProxy {
    /// `demand` is shared with the placement loop that samples it (`routing::Prewarm`).
    /// `trust` is what `https://` backends are checked against by fleet operations.
    pub fn new(
        pool: Arc<Pool>,
        queue: Arc<AdmissionQueue>,
        demand: Arc<DemandTable>,
        trust: &crate::tls::BackendTrust,
    ) -> CorralProxy {
        CorralProxy {
            pool,
            router: Router::new(demand),
            queue,
            fleet_client: fleet::client(trust),
        }
    }
}

/// The service on the `listen` addresses and the TLS port: the proxy behind Pingora's
/// HTTP/1 loop, with a total deadline on every request header (and TLS handshake).
pub fn proxy_service(
    conf: &Arc<ServerConf>,
    proxy: CorralProxy,
    tls: Option<crate::tls::TlsPort>,
) -> Service<header_deadline::HeaderDeadlineApp> {
    let pool = proxy.pool.clone();
    let app =
        header_deadline::HeaderDeadlineApp::new(pingora::proxy::http_proxy(conf, proxy), pool, tls);
    Service::new("corral proxy".to_string(), app)
}

#[async_trait]
impl ProxyHttp for CorralProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        header_deadline::stop_header_clock(session);
        // A client that stops reading must not hold its backend slot forever: a write
        // to it may block as long as a backend may stay silent.
        let idle = self.pool.load().config.timeouts.idle;
        session.as_downstream_mut().set_write_timeout(Some(idle));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.endpoint = Endpoint::classify(&req.method, req.uri.path());
        let timeouts = self.pool.load().config.timeouts.clone();
        // In an upgrade's hand-over, a connection kept alive here would be dropped when
        // this process stops accepting, racing the client's next request.
        let keepalive = !self.pool.is_handing_over();
        session.set_keepalive(keepalive.then(|| timeouts.client.as_secs().max(1)));
        session
            .as_downstream_mut()
            .set_read_timeout(Some(timeouts.client));
        ctx.body_deadline = body_deadline::BodyDeadline::for_request(
            &ctx.endpoint,
            ctx.started,
            timeouts.client_body,
        );
        if hop::passed_through_us(&session.req_header().headers) {
            session.set_keepalive(None);
            ctx.status = 508;
            let openai = ctx.endpoint.is_openai();
            respond::write_error(session, openai, 508, hop::LOOP_MESSAGE, 0).await?;
            return Ok(true);
        }
        if self.authenticate(session, ctx).await? {
            return Ok(true);
        }
        if ctx.endpoint.is_local() {
            let endpoint = ctx.endpoint.clone();
            let only = ctx.client.as_ref().map(|c| &*c.key);
            self.answer_locally(session, &endpoint, only).await?;
            return Ok(true);
        }
        // Maintenance mode (`corral serving disable`): in-flight requests finish, new
        // ones are told to come back (or go to another replica).
        if !self.pool.is_serving() {
            session.set_keepalive(None);
            ctx.status = 503;
            let retry_after = self.pool.load().config.routing.retry_after.as_secs();
            let msg = if self.pool.is_stopping() {
                "corral is shutting down; retry on another replica or after it restarts"
            } else {
                "corral is in maintenance mode (serving disabled); retry later"
            };
            respond::write_error(session, ctx.endpoint.is_openai(), 503, msg, retry_after).await?;
            return Ok(true);
        }
        if let Some(refusal) = self.classify_route(session, ctx).await? {
            self.refuse(session, ctx, refusal).await?;
            return Ok(true);
        }
        if self.limit_client(session, ctx).await? {
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
            Ok(planned) => {
                ctx.planned = Some(planned);
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
        let planned = match ctx.planned.take() {
            Some(p) => p,
            None => self.reserve(
                self.router
                    .pick_backend(&table, &ctx.route, &ctx.tried)
                    .map_err(|e| no_route_error(&e))?,
            ),
        };
        // A previous attempt that ended without a verdict (a stale pooled connection
        // being replayed) says nothing about its backend.
        if let Some(mut previous) = ctx.attempt.take() {
            previous.settle(&table, Outcome::Neutral);
        }
        let pick = planned.pick();
        let state = pick.backend.state.clone();
        // TLS checks the certificate against the backend's host name (or IP); an empty
        // SNI would turn the check off in Pingora.
        let url = &pick.backend.config.url;
        let (tls, sni) = match url.tls {
            true => (true, url.host.clone()),
            false => (false, String::new()),
        };
        ctx.tried.push(pick.backend.name().to_string());
        let model = ctx.model_name().filter(|_| ctx.endpoint.is_inference());
        ctx.attempt = Some(Attempt::start(planned, model));
        let Some(addr) = state.addr.load_full() else {
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                format!("backend '{}' has no resolved address", state.name),
            ));
        };
        let t = &table.config.timeouts;
        let mut peer = HttpPeer::new(*addr, tls, sni);
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
        if let Some(attempt) = ctx.attempt.as_mut() {
            attempt.stall = Some(stall::StallWatch::new(fd));
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let table = self.pool.load();
        if let Some(attempt) = ctx.attempt.as_mut() {
            attempt.settle(&table, Outcome::Failed("connect failed"));
        }
        // Nothing reached the backend: safe to try another, a bounded number of times.
        if ctx.tried.len() <= table.config.routing.max_retries {
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
        // corral's own answers (a 408 for a slow body) carry the client's message as
        // their context: keep it.
        let mut e = match e.etype() {
            ErrorType::HTTPStatus(_) => e,
            _ => e.more_context(format!("Peer: {peer}")),
        };
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
        if let Some(host) = ctx.pick().and_then(|p| p.backend.headers.host.clone()) {
            upstream_request.insert_header(http::header::HOST, host)?;
        }
        upstream_request.remove_header(admission::TARGET_HEADER);
        // A corral client key is corral's business, not the backend's.
        if ctx.client.is_some() {
            upstream_request.remove_header(&http::header::AUTHORIZATION);
        }
        upstream_request.append_header(http::header::VIA, hop::via_value())?;
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let per_read = self.pool.load().config.timeouts.client;
        body_deadline::check_forwarded_chunk(session, ctx.body_deadline, end_of_stream, per_read)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.status = upstream_response.status.as_u16();
        if let Some(attempt) = ctx.attempt.as_mut() {
            attempt.status = Some(ctx.status);
        }
        if ctx.status == 503 {
            if let Some(retry) = self.retry_busy(session, ctx) {
                return Err(retry);
            }
        }
        let content_type = upstream_response
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes());
        ctx.sse = content_type.is_some_and(|v| v.starts_with(b"text/event-stream"));
        ctx.whole_answer = content_type.is_some_and(|v| v.starts_with(b"application/json"));
        ctx.framer = framing::LineFramer::for_content_type(content_type);
        // A sized answer (every non-streamed one) usually arrives whole with its
        // header; a stream may go silent right after it.
        let sized = upstream_response
            .headers
            .contains_key(http::header::CONTENT_LENGTH);
        let idle = self.pool.load().config.timeouts.idle;
        if let Some(stall) = ctx.attempt.as_mut().and_then(|a| a.stall.as_mut()) {
            if sized {
                stall.arm_on_next_chunk(idle);
            } else {
                stall.arm(idle);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        respond::fit_to_http10(session, upstream_response);
        if !self.pool.load().config.routing.response_headers {
            return Ok(());
        }
        if let Some(pick) = ctx.pick() {
            if let Some(name) = pick.backend.headers.name.clone() {
                upstream_response.insert_header("X-Corral-Backend", name)?;
            }
            let route = http::HeaderValue::from_static(pick.reason.as_str());
            upstream_response.insert_header("X-Corral-Route", route)?;
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
            let first_content = ctx.observer.feed(chunk);
            // A non-streamed answer arrives all at once: its first byte is its TTFT.
            if first_content
                || (ctx.whole_answer && ctx.first_token.is_none() && ctx.endpoint.is_inference())
            {
                ctx.first_token.get_or_insert_with(Instant::now);
            }
        }
        let Some(attempt) = ctx.attempt.as_mut() else {
            return Ok(None);
        };
        if let Some(stall) = attempt.stall.as_mut() {
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
            attempt.release();
        }
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        ctx.framer.frame(body, end_of_stream);
        Ok(None)
    }

    fn suppress_error_log(&self, session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        if !client_error::is_client_fault(e) {
            return false;
        }
        client_error::log(session, e);
        true
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.answer_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        outcome::settle(&self.pool.load(), ctx, e);
        let changes_models = matches!(
            ctx.endpoint,
            Endpoint::Pull | Endpoint::Create | Endpoint::Copy | Endpoint::Delete
        );
        if changes_models && (200..300).contains(&ctx.status) {
            // Refresh inventories now rather than at the next interval.
            self.pool.changed.notify_one();
        }
        // Release the slot before the log line: a queued request can start now.
        if let Some(attempt) = ctx.attempt.as_mut() {
            attempt.stall = None;
            attempt.release();
        }
        let status = session
            .response_written()
            .map_or(ctx.status, |r| r.status.as_u16());
        client_keys::settle(ctx, status);
        outcome::access_log(session, ctx, e);
    }
}
