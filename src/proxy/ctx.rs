//! Per-request state shared by the proxy phases.

use std::time::Instant;

use crate::model::ModelName;
use crate::pool::InFlight;
use crate::routing::{Need, Pick, RouteRequest};

use super::endpoint::Endpoint;
use super::observe::StreamObserver;
use super::stall::StallWatch;

pub struct RequestCtx {
    pub started: Instant,
    pub endpoint: Endpoint,
    /// The model as the client named it.
    pub model: Option<String>,
    pub route: RouteRequest,
    /// `X-Corral-Target: all`: a fleet operation on every backend.
    pub target_all: bool,
    /// Chosen before proxying so a 404/503 can be answered with a body; taken by the
    /// first `upstream_peer` call. Retries pick again.
    pub planned: Option<Pick>,
    /// The backend of the current attempt.
    pub current: Option<Pick>,
    /// Released when the attempt changes or the request ends, whatever the path.
    pub in_flight: Option<InFlight>,
    /// Backends this request already tried.
    pub tried: Vec<String>,
    /// Time spent in the admission queue.
    pub queued_ms: Option<u64>,
    pub stall: Option<StallWatch>,
    /// The upstream's response is Server-Sent Events (OpenAI streaming).
    pub sse: bool,
    pub status: u16,
    pub upstream_started: Option<Instant>,
    pub first_token: Option<Instant>,
    pub observer: StreamObserver,
    /// The outcome was already fed to passive health (e.g. a connect failure).
    pub outcome_recorded: bool,
}

impl RequestCtx {
    pub fn new() -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            endpoint: Endpoint::Other,
            model: None,
            route: RouteRequest::new(Need::Any),
            target_all: false,
            planned: None,
            current: None,
            in_flight: None,
            tried: Vec::new(),
            queued_ms: None,
            stall: None,
            sse: false,
            status: 0,
            upstream_started: None,
            first_token: None,
            observer: StreamObserver::default(),
            outcome_recorded: false,
        }
    }

    pub fn backend_name(&self) -> &str {
        self.current.as_ref().map_or("-", |p| p.backend.name())
    }

    pub fn model_name(&self) -> Option<&ModelName> {
        match &self.route.need {
            Need::Model(m) | Need::Lacking(m) => Some(m),
            _ => None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
