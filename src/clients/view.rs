//! The JSON view of each key for `GET /api/v1/clients` and `corral clients`: its
//! limits, what it used, what is in flight and how often a limit refused it. Never the
//! key itself.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::ClientKey;

use super::ClientState;

/// `GET /api/v1/clients`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientsView {
    /// Whether keys are required on the proxy port (a `clients:` section exists).
    pub enabled: bool,
    pub clients: Vec<ClientView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientView {
    pub name: String,
    pub priority: String,
    /// The `models` allow-list; `null` = every model.
    pub models: Option<Vec<String>>,
    /// Requests of this key in corral now, queued ones included.
    pub in_flight: usize,
    /// Requests admitted to be proxied since start (refusals and fleet listings are
    /// not; `corral_client_requests_total` counts every request by status).
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub max_concurrency: Option<usize>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    /// What the buckets hold now (`null` without that limit); tokens go negative
    /// after an answer larger than what was left, and refuse until refilled.
    pub remaining_requests: Option<i64>,
    pub remaining_tokens: Option<i64>,
    /// Refusals since start: 403 for a model outside `models`, 429 per limit.
    pub refused_model: u64,
    pub throttled_concurrency: u64,
    pub throttled_requests: u64,
    pub throttled_tokens: u64,
}

impl ClientView {
    pub fn of(key: &ClientKey, s: &ClientState) -> ClientView {
        let now = Instant::now();
        let read = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (remaining_requests, remaining_tokens) = {
            let mut b = s.buckets();
            let requests = key.requests_per_minute.map(|limit| {
                let limit = u64::from(limit);
                b.requests
                    .get_or_insert_with(|| super::Bucket::full(limit, now))
                    .remaining(limit, now)
            });
            let tokens = key.tokens_per_minute.map(|limit| {
                b.tokens
                    .get_or_insert_with(|| super::Bucket::full(limit, now))
                    .remaining(limit, now)
            });
            (requests, tokens)
        };
        ClientView {
            name: key.name.clone(),
            priority: key.priority.as_str().to_string(),
            models: key.models.as_ref().map(|m| m.patterns().to_vec()),
            in_flight: s.in_flight(),
            requests: read(&s.requests),
            prompt_tokens: read(&s.prompt_tokens),
            completion_tokens: read(&s.completion_tokens),
            max_concurrency: key.max_concurrency,
            requests_per_minute: key.requests_per_minute,
            tokens_per_minute: key.tokens_per_minute,
            remaining_requests,
            remaining_tokens,
            refused_model: read(&s.refused_model),
            throttled_concurrency: read(&s.throttled_concurrency),
            throttled_requests: read(&s.throttled_requests),
            throttled_tokens: read(&s.throttled_tokens),
        }
    }
}
