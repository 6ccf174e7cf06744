//! Client keys at run time: who a request's `Authorization: Bearer KEY` says it is,
//! whether that key may have it now (model allow-list, concurrency, requests and
//! tokens per minute), and what each key used. Limits hold per replica.
//!
//! The keys come from the config (`config::ClientsConfig`); each key's live state —
//! counters, buckets, requests in flight — is kept by name in `ClientStates` and
//! survives a reload for every key whose name stays, like a backend's.

mod limits;
mod view;

pub use limits::retry_after_secs;
pub use view::{ClientView, ClientsView};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{ClientKey, ClientsConfig, Priority};
use crate::model::ModelName;

use limits::Bucket;

/// The keys of one config, each with its live state; `None` in the routing table when
/// the config has no `clients:` (the port is open).
#[derive(Debug)]
pub struct ClientTable {
    config: ClientsConfig,
    /// The keys again, shared: a request holds its own without copying globs.
    keys: Vec<Arc<ClientKey>>,
    states: Vec<Arc<ClientState>>,
}

/// Who a request is, once its key matched.
#[derive(Debug, Clone)]
pub struct Client {
    pub key: Arc<ClientKey>,
    pub state: Arc<ClientState>,
}

/// Why a request with a valid key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("client '{client}' may not use model '{model}'")]
    Model { client: String, model: String },
    #[error(
        "client '{client}' has {limit} requests in flight (max_concurrency); retry when one ends"
    )]
    Concurrency { client: String, limit: usize },
    #[error("client '{client}' is over its requests_per_minute ({limit})")]
    Requests {
        client: String,
        limit: u32,
        retry_after: Duration,
    },
    #[error("client '{client}' is over its tokens_per_minute ({limit})")]
    Tokens {
        client: String,
        limit: u64,
        retry_after: Duration,
    },
}

impl Refused {
    /// The OpenAI `type` of a 429 (OpenAI says which limit: requests or tokens).
    pub fn limit_kind(&self) -> &'static str {
        match self {
            Refused::Tokens { .. } => "tokens",
            _ => "requests",
        }
    }

    /// When to come back, if the limit says (a concurrency slot frees whenever a
    /// request ends, so the caller picks its usual `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refused::Requests { retry_after, .. } | Refused::Tokens { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

/// A key's live state. Atomics for counters; the buckets behind a short lock that is
/// never held across an await.
#[derive(Debug)]
pub struct ClientState {
    pub name: String,
    /// Identifies the key's requests in the admission queue (keys take turns).
    pub flow: u64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    refused_model: AtomicU64,
    throttled_concurrency: AtomicU64,
    throttled_requests: AtomicU64,
    throttled_tokens: AtomicU64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// Live state by key name, kept across reloads; only touched when a table is built.
#[derive(Default)]
pub struct ClientStates(Mutex<HashMap<String, Arc<ClientState>>>);

impl ClientTable {
    /// Joins `config`'s keys with their live state; keys that left forget theirs
    /// (requests still in flight hold their own `Arc`).
    pub fn build(config: &ClientsConfig, states: &ClientStates) -> ClientTable {
        static FLOWS: AtomicU64 = AtomicU64::new(1);
        let mut by_name = states.0.lock().unwrap_or_else(|p| p.into_inner());
        let states: Vec<Arc<ClientState>> = config
            .keys
            .iter()
            .map(|k| {
                by_name
                    .entry(k.name.clone())
                    .or_insert_with(|| {
                        Arc::new(ClientState::new(
                            &k.name,
                            FLOWS.fetch_add(1, Ordering::Relaxed),
                        ))
                    })
                    .clone()
            })
            .collect();
        by_name.retain(|name, _| config.keys.iter().any(|k| &k.name == name));
        crate::metrics::global().register_clients(config.keys.iter().map(|k| k.name.as_str()));
        ClientTable {
            config: config.clone(),
            keys: config.keys.iter().cloned().map(Arc::new).collect(),
            states,
        }
    }

    /// The client a bearer `Authorization` header names, if any key matches.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Client> {
        let presented = bearer(authorization?)?;
        let i = self.config.find(presented)?;
        Some(Client {
            key: self.keys[i].clone(),
            state: self.states[i].clone(),
        })
    }

    /// Every key with its state, in config order.
    pub fn clients(&self) -> impl Iterator<Item = (&ClientKey, &Arc<ClientState>)> {
        self.config.keys.iter().zip(&self.states)
    }
}

/// The token of `Bearer TOKEN` (the scheme is case-insensitive, RFC 9110).
fn bearer(header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl ClientState {
    fn new(name: &str, flow: u64) -> ClientState {
        ClientState {
            name: name.to_string(),
            flow,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            refused_model: AtomicU64::new(0),
            throttled_concurrency: AtomicU64::new(0),
            throttled_requests: AtomicU64::new(0),
            throttled_tokens: AtomicU64::new(0),
            buckets: Mutex::new(Buckets::default()),
        }
    }

    fn buckets(&self) -> MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl Client {
    pub fn name(&self) -> &str {
        &self.key.name
    }

    pub fn priority(&self) -> Priority {
        self.key.priority
    }

    /// Whether the key may use `model`; a refusal is counted.
    pub fn check_model(&self, model: &ModelName, as_named: &str) -> Result<(), Refused> {
        if self.key.allows(model) {
            return Ok(());
        }
        self.state.refused_model.fetch_add(1, Ordering::Relaxed);
        Err(Refused::Model {
            client: self.key.name.clone(),
            model: as_named.to_string(),
        })
    }

    /// Admits one request under the key's limits: it holds one of `max_concurrency`
    /// until the returned guard drops (queued time included), and takes one of its
    /// `requests_per_minute`. A request refused takes nothing.
    pub fn admit(&self, now: Instant) -> Result<InFlightGuard, Refused> {
        let s = &self.state;
        let k = &self.key;
        let guard = InFlightGuard::acquire(s);
        if let Some(limit) = k.max_concurrency {
            if s.in_flight() > limit {
                s.throttled_concurrency.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Concurrency {
                    client: k.name.clone(),
                    limit,
                });
            }
        }
        let mut buckets = s.buckets();
        if let Some(limit) = k.tokens_per_minute {
            let b = buckets
                .tokens
                .get_or_insert_with(|| Bucket::full(limit, now));
            if let Err(retry_after) = b.check_positive(limit, now) {
                s.throttled_tokens.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Tokens {
                    client: k.name.clone(),
                    limit,
                    retry_after,
                });
            }
        }
        if let Some(limit) = k.requests_per_minute {
            let b = buckets
                .requests
                .get_or_insert_with(|| Bucket::full(u64::from(limit), now));
            if let Err(retry_after) = b.take_one(u64::from(limit), now) {
                s.throttled_requests.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Requests {
                    client: k.name.clone(),
                    limit,
                    retry_after,
                });
            }
        }
        s.requests.fetch_add(1, Ordering::Relaxed);
        Ok(guard)
    }

    /// Books what an answer used, once it is over: the key's counters, its token
    /// bucket and the usage metrics.
    pub fn record_tokens(&self, prompt: u64, completion: u64, now: Instant) {
        let s = &self.state;
        s.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        s.completion_tokens.fetch_add(completion, Ordering::Relaxed);
        if let Some(limit) = self.key.tokens_per_minute {
            s.buckets()
                .tokens
                .get_or_insert_with(|| Bucket::full(limit, now))
                .debit(prompt + completion, limit, now);
        }
        crate::metrics::global().client_tokens(&self.key.name, prompt, completion);
    }
}

/// One request of a key in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlightGuard(Arc<ClientState>);

impl InFlightGuard {
    fn acquire(state: &Arc<ClientState>) -> InFlightGuard {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(state.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
