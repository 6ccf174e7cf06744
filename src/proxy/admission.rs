//! Deciding a request's route before it is proxied: what it needs (from the body and
//! headers), which backend, and — when every candidate is busy — waiting its turn in
//! the admission queue.

use std::time::Instant;

use pingora::proxy::Session;
use pingora::Result;

use crate::model::ModelName;
use crate::routing::{Need, NoRoute, Pick, QueueError, RouteRequest, Turn};

use super::attempt::Planned;
use super::body_deadline::{read_body_chunk, BodyDeadline};
use super::endpoint::Endpoint;
use super::sniff::{BodySniffer, Facts, Sniff};
use super::{CorralProxy, RequestCtx};

/// Pingora keeps at most this much of a request body for retries.
const RETRY_BUFFER: usize = 64 * 1024;

/// Header that sends a request to one named backend (or, for fleet operations, `all`).
pub(super) const TARGET_HEADER: &str = "x-corral-target";

/// Why a request cannot be proxied, as the client will be told.
pub(super) enum Refusal {
    /// 400 with this message.
    BadRequest(String),
    NoRoute(NoRoute),
    Queue(QueueError),
    /// The client left while waiting: nothing to answer.
    ClientGone,
}

impl CorralProxy {
    /// Reads body chunks (kept in Pingora's retry buffer) until the model and the
    /// conversation anchor show.
    ///
    /// A read past 64 KiB makes Pingora drop its retry buffer, and then the body could
    /// not reach the backend. A body whose `Content-Length` fits the buffer can be read
    /// to its end safely; any other stops being read as soon as the model is known.
    async fn sniff_request(
        &self,
        session: &mut Session,
        fields: &[&str],
        deadline: Option<BodyDeadline>,
    ) -> Result<Sniff> {
        let fits = session
            .get_header(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok())
            .is_some_and(|n| n <= RETRY_BUFFER);
        let too_far = || {
            Sniff::NotJson(format!(
                "the \"model\" field must appear within the first {} KiB of the body",
                RETRY_BUFFER / 1024
            ))
        };
        session.as_mut().enable_retry_buffering();
        // Reading on is safe up to half the retry buffer; past it, every chunk is
        // parsed so that a verdict comes before the buffer can overflow.
        let mut sniffer = BodySniffer::new(fields, !fits, RETRY_BUFFER / 2);
        loop {
            let Some(chunk) = read_body_chunk(session, deadline).await? else {
                return Ok(sniffer.finish());
            };
            if session.as_ref().retry_buffer_truncated() {
                return Ok(too_far());
            }
            if let Some(verdict) = sniffer.push(chunk) {
                return Ok(verdict);
            }
        }
    }

    /// Works out `ctx.route` from the endpoint, body and headers.
    pub(super) async fn classify_route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Refusal>> {
        let target = session
            .get_header(TARGET_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut facts = Facts::default();
        if let Some(fields) = ctx.endpoint.model_fields() {
            match self
                .sniff_request(session, fields, ctx.body_deadline)
                .await?
            {
                Sniff::Complete(f) => facts = f,
                Sniff::NotJson(why) => {
                    return Ok(Some(Refusal::BadRequest(format!(
                        "invalid JSON body: {why}"
                    ))))
                }
                Sniff::NeedMore(_) => {
                    return Ok(Some(Refusal::BadRequest(
                        "invalid JSON body: unexpected end".into(),
                    )))
                }
            }
            if facts.model.is_none() && ctx.endpoint != Endpoint::Pull {
                return Ok(Some(Refusal::BadRequest("model is required".into())));
            }
        }
        let model = facts.model.as_deref().map(ModelName::new);
        ctx.model = facts.model.clone();
        ctx.model_key = model.clone();
        ctx.target_all = target.as_deref() == Some("all");
        let need = match (&target, &ctx.endpoint, &model) {
            (Some(_), _, Some(m)) if ctx.target_all => Need::Model(m.clone()),
            (Some(_), _, None) if ctx.target_all => Need::Any,
            (Some(name), _, _) => Need::Named(name.clone()),
            (None, Endpoint::Pull, Some(m)) => Need::Lacking(m.clone()),
            (None, Endpoint::Blob | Endpoint::Create, _) => Need::Pinned,
            (None, _, Some(m)) => Need::Model(m.clone()),
            (None, _, None) => Need::Any,
        };
        let explicit = session
            .get_header(self.pool.load().config.routing.affinity_header.as_str())
            .map(|v| xxhash_rust::xxh3::xxh3_64(v.as_bytes()));
        let key = match (&need, explicit) {
            (Need::Model(m), Some(k)) => {
                Some(k ^ xxhash_rust::xxh3::xxh3_64(m.as_str().as_bytes()))
            }
            (Need::Model(m), None) => facts.conversation_key(m.as_str()),
            _ => None,
        };
        ctx.route = RouteRequest {
            need,
            key,
            waiting: 0,
        };
        Ok(None)
    }

    /// Picks the backend for the first attempt and takes its slot, waiting in the queue
    /// when every candidate is busy.
    pub(super) async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Planned, Refusal> {
        let model = ctx.model_name().cloned();
        let config = self.pool.load().config.clone();
        let turn = ctx.client.as_ref().map_or_else(Turn::default, |c| Turn {
            priority: c.priority(),
            flow: c.state.flow,
        });
        // Behind earlier waiters for the same model: queue and wait for its turn (the
        // queue decides whether it goes first: an interactive key before batch ones).
        let first = if self.queue.waiting_for(model.as_ref()) == 0 {
            self.router.pick_backend(&self.pool.load(), &ctx.route, &[])
        } else {
            Err(NoRoute::Full)
        };
        match first {
            Ok(pick) => return Ok(self.reserve(pick)),
            Err(NoRoute::Full) => {}
            Err(e) => return Err(Refusal::NoRoute(e)),
        }
        let ticket = self
            .queue
            .enter(model, config.routing.queue_size, turn)
            .map_err(Refusal::Queue)?;
        let since = Instant::now();
        let route = ctx.route.clone();
        let wait = ticket.wait(config.routing.queue_timeout, |waiting| {
            let req = RouteRequest {
                waiting,
                ..route.clone()
            };
            self.router.pick_backend(&self.pool.load(), &req, &[])
        });
        // A client that hangs up while waiting leaves the queue at once. Watching the
        // connection is only possible once its body has been read entirely.
        let result = if session.as_mut().is_body_done() {
            tokio::select! {
                r = wait => r,
                _ = session.as_downstream_mut().read_body_or_idle(true) => return Err(Refusal::ClientGone),
            }
        } else {
            wait.await
        };
        ctx.queued_ms = Some(since.elapsed().as_millis() as u64);
        // corral read none of the body while the request waited: that time is not the
        // client's to make up.
        if let Some(deadline) = ctx.body_deadline.as_mut() {
            deadline.postpone(since.elapsed());
        }
        // The slot is taken while the ticket is still held: leaving the queue wakes the
        // next waiter, which must find the slot gone.
        let planned = result.map(|pick| self.reserve(pick));
        drop(ticket);
        planned.map_err(|e| match e {
            QueueError::NoRoute(n) => Refusal::NoRoute(n),
            other => Refusal::Queue(other),
        })
    }

    /// Takes the slot of `pick` now, so no other request can pick it in the meantime.
    pub(super) fn reserve(&self, pick: Pick) -> Planned {
        Planned::reserve(pick, self.queue.clone())
    }
}
