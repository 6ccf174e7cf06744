//! Per-request state shared by the proxy phases.

use std::time::Instant;

use crate::clients::{Client, InFlightGuard};
use crate::model::ModelName;
use crate::routing::{Need, Pick, RouteRequest};

use super::attempt::{Attempt, Planned};
use super::body_deadline::BodyDeadline;
use super::endpoint::Endpoint;
use super::framing::LineFramer;
use super::observe::StreamObserver;

pub struct RequestCtx {
    pub started: Instant,
    pub endpoint: Endpoint,
    /// The model as the client named it.
    pub model: Option<String>,
    /// The same, normalized: the routing key and the metrics label, whatever the route
    /// (a request sent to one named backend still uses a model).
    pub model_key: Option<ModelName>,
    /// The answer is one JSON document, not a stream: its first byte is its first token.
    pub whole_answer: bool,
    pub route: RouteRequest,
    /// `X-Corral-Target: all`: a fleet operation on every backend.
    pub target_all: bool,
    /// Chosen (and its slot taken) before proxying so a 404/503 can be answered with a
    /// body; taken by the first `upstream_peer` call. Retries pick again.
    pub planned: Option<Planned>,
    /// The current try at a backend; its slot is released when it is replaced or the
    /// request ends, whatever the path.
    pub attempt: Option<Attempt>,
    /// Backends this request already tried.
    pub tried: Vec<String>,
    /// Time spent in the admission queue.
    pub queued_ms: Option<u64>,
    /// The upstream's response is Server-Sent Events (OpenAI streaming).
    pub sse: bool,
    /// The status the client is (or would be) answered.
    pub status: u16,
    pub first_token: Option<Instant>,
    pub observer: StreamObserver,
    /// When the request body must be complete (`None`: blob uploads).
    pub body_deadline: Option<BodyDeadline>,
    /// Holds back a partial line of a streamed answer.
    pub framer: LineFramer,
    /// The client key the request presented (`None` when the port is open).
    pub client: Option<Client>,
    /// The request's place in its key's `max_concurrency`, from admission to its end.
    pub client_guard: Option<InFlightGuard>,
}

impl RequestCtx {
    pub fn new() -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            endpoint: Endpoint::Other,
            model: None,
            model_key: None,
            whole_answer: false,
            route: RouteRequest::new(Need::Any),
            target_all: false,
            planned: None,
            attempt: None,
            tried: Vec::new(),
            queued_ms: None,
            sse: false,
            status: 0,
            first_token: None,
            observer: StreamObserver::default(),
            body_deadline: None,
            framer: LineFramer::default(),
            client: None,
            client_guard: None,
        }
    }

    /// The backend and reason of the current attempt.
    pub fn pick(&self) -> Option<&Pick> {
        self.attempt.as_ref().map(|a| &a.pick)
    }

    pub fn backend_name(&self) -> &str {
        self.pick().map_or("-", |p| p.backend.name())
    }

    pub fn model_name(&self) -> Option<&ModelName> {
        self.model_key.as_ref()
    }

    /// The client key's name for logs (`-` when the port is open).
    pub fn client_name(&self) -> &str {
        self.client.as_ref().map_or("-", |c| c.name())
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
