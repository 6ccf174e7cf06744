//! The series one finished request records into, resolved once per (backend, model,
//! endpoint) and kept per thread. `with_label_values` hashes every label and takes the
//! vector's lock — a cache line all worker threads write — on each call, six times a
//! request; a cached handle is an atomic add.
//!
//! Removing series (a model leaving the fleet) bumps a generation that empties every
//! thread's cache before its next use, so no handle outlives its series for more than
//! the request that raced the removal.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use xxhash_rust::xxh3::{Xxh3, Xxh3DefaultBuilder};

/// More distinct series than this in one thread's cache means labels churn (backends
/// renamed by reloads): start over rather than grow.
const MAX_CACHED: usize = 4096;

/// The vectors a request's series come from.
pub(super) struct RequestVecs<'a> {
    pub(super) requests: &'a IntCounterVec,
    pub(super) duration: &'a HistogramVec,
    pub(super) ttft: &'a HistogramVec,
    pub(super) tokens: &'a IntCounterVec,
    pub(super) tokens_per_second: &'a HistogramVec,
}

/// Handles of one (backend, model, endpoint), each made on first use: a series is
/// only created by a request that records into it, as before the cache.
pub(super) struct RequestSeries {
    backend: Box<str>,
    model: Box<str>,
    endpoint: &'static str,
    /// `corral_requests_total` by status code, for the few codes this series sees.
    codes: Vec<(&'static str, IntCounter)>,
    duration: Option<Histogram>,
    ttft: Option<Histogram>,
    /// Prompt and completion.
    tokens: Option<[IntCounter; 2]>,
    tokens_per_second: Option<Histogram>,
}

impl RequestSeries {
    fn new(backend: &str, model: &str, endpoint: &'static str) -> Self {
        RequestSeries {
            backend: backend.into(),
            model: model.into(),
            endpoint,
            codes: Vec::new(),
            duration: None,
            ttft: None,
            tokens: None,
            tokens_per_second: None,
        }
    }

    fn is(&self, backend: &str, model: &str, endpoint: &str) -> bool {
        *self.backend == *backend && *self.model == *model && self.endpoint == endpoint
    }

    /// `corral_requests_total` of this series for `code` (a `code_label` value).
    pub(super) fn requests(&mut self, vecs: &RequestVecs, code: &'static str) -> &IntCounter {
        let i = match self.codes.iter().position(|(c, _)| *c == code) {
            Some(i) => i,
            None => {
                let labels = [&*self.backend, &*self.model, self.endpoint, code];
                self.codes
                    .push((code, vecs.requests.with_label_values(&labels)));
                self.codes.len() - 1
            }
        };
        &self.codes[i].1
    }

    pub(super) fn duration(&mut self, vecs: &RequestVecs) -> &Histogram {
        let labels = [&*self.backend, &*self.model, self.endpoint];
        self.duration
            .get_or_insert_with(|| vecs.duration.with_label_values(&labels))
    }

    pub(super) fn ttft(&mut self, vecs: &RequestVecs) -> &Histogram {
        let labels = [&*self.backend, &*self.model];
        self.ttft
            .get_or_insert_with(|| vecs.ttft.with_label_values(&labels))
    }

    /// The prompt and completion token counters.
    pub(super) fn tokens(&mut self, vecs: &RequestVecs) -> &[IntCounter; 2] {
        let (backend, model) = (&*self.backend, &*self.model);
        self.tokens.get_or_insert_with(|| {
            ["prompt", "completion"]
                .map(|kind| vecs.tokens.with_label_values(&[backend, model, kind]))
        })
    }

    pub(super) fn tokens_per_second(&mut self, vecs: &RequestVecs) -> &Histogram {
        let labels = [&*self.backend, &*self.model];
        self.tokens_per_second
            .get_or_insert_with(|| vecs.tokens_per_second.with_label_values(&labels))
    }
}

#[derive(Default)]
struct Cache {
    /// The registry (`Generation::id`) and generation the entries belong to.
    valid_for: (u64, u64),
    /// Keyed by the labels' xxh3 (the entry checks its labels).
    by_hash: HashMap<u64, RequestSeries, Xxh3DefaultBuilder>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::default();
}

/// Counts removals of series in one registry; a thread's cache is valid for one
/// registry (tests build several) and one count.
pub(super) struct Generation {
    id: u64,
    count: AtomicU64,
}

impl Default for Generation {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Generation {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            count: AtomicU64::new(0),
        }
    }
}

impl Generation {
    pub(super) fn bump(&self) {
        self.count.fetch_add(1, Ordering::Release);
    }
}

/// Runs `record` with the series of (backend, model, endpoint), cached on this thread.
pub(super) fn with_series(
    generation: &Generation,
    (backend, model, endpoint): (&str, &str, &'static str),
    record: impl FnOnce(&mut RequestSeries),
) {
    let current = (generation.id, generation.count.load(Ordering::Acquire));
    let hash = {
        let mut h = Xxh3::new();
        for part in [backend, model, endpoint] {
            h.update(part.as_bytes());
            h.update(&[0xff]);
        }
        h.digest()
    };
    CACHE.with_borrow_mut(|cache| {
        if cache.valid_for != current || cache.by_hash.len() >= MAX_CACHED {
            cache.by_hash.clear();
            cache.valid_for = current;
        }
        let series = cache
            .by_hash
            .entry(hash)
            .and_modify(|s| {
                // A hash collision: the newcomer takes the slot.
                if !s.is(backend, model, endpoint) {
                    *s = RequestSeries::new(backend, model, endpoint);
                }
            })
            .or_insert_with(|| RequestSeries::new(backend, model, endpoint));
        record(series)
    })
}
