//! Every Prometheus metric corral exports, defined in one place, in one registry.
//!
//! Per-request metrics are recorded once, when a request ends (`proxy::outcome`), from
//! figures the request context already holds. Gauges that mirror live state (backend
//! up, in-flight, ejected, queue depth) are not touched on the hot path at all: a
//! collector reads them from the pool when `/metrics` is scraped (`live`). The Raft
//! metrics, `process_*` and `corral_build_info` are in the same registry.
//!
//! Label cardinality is bounded: `backend` comes from the pool, `endpoint` and `code`
//! from fixed sets, and `model` only from the models some backend lists now; any other
//! name a client sends is counted as `other`, and the series of a model that leaves the
//! fleet are removed.

mod json;
mod live;
mod series;

pub use json::{FamilyView, MetricsView, SampleView, SummaryRow};
pub use live::LiveSource;

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::model::ModelName;
use crate::pool::RoutingTable;

/// Model label for a name outside the known inventory.
pub const OTHER_MODEL: &str = "other";
/// Model label for requests that name no model (fleet listings, blobs).
pub const NO_MODEL: &str = "none";
/// Backend label for requests answered by corral itself.
pub const NO_BACKEND: &str = "none";

const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const TTFT_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const QUEUE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const LOAD_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
const TPS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0,
];

/// Token counts and timings from a generation's final chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenStats {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub completion_ns: u64,
    pub load_ns: u64,
}

/// What one finished request contributes.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    pub backend: Option<&'a str>,
    pub model: Option<&'a ModelName>,
    pub endpoint: &'static str,
    pub status: u16,
    pub duration: Duration,
    pub ttft: Option<Duration>,
    pub queue_wait: Option<Duration>,
    pub tokens: Option<TokenStats>,
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    tokens: IntCounterVec,
    tokens_per_second: HistogramVec,
    load_duration: HistogramVec,
    ejections: IntCounterVec,
    ejections_capped: IntCounterVec,
    panic_routes: IntCounterVec,
    unexpected_answers: IntCounterVec,
    model_loads: IntCounterVec,
    queue_wait: Histogram,
    reloads: IntCounterVec,
    client_requests: IntCounterVec,
    client_tokens: IntCounterVec,
    live: Arc<live::LiveCollector>,
    /// Model names that may be used as label values (from the backends' inventories).
    known_models: ArcSwap<HashSet<String>>,
    /// Bumped when series are removed: the per-thread handle caches start over.
    series_generation: series::Generation,
}

/// The process-wide metrics. One registry per process: corral runs one server.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Status codes as label values without formatting one per request.
fn code_label(status: u16) -> &'static str {
    static CODES: LazyLock<Vec<String>> =
        LazyLock::new(|| (0..600).map(|c| c.to_string()).collect());
    CODES.get(status as usize).map_or("other", String::as_str)
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        // Registration only fails on a duplicate or malformed name: a bug caught by the
        // unit test below, not a run-time condition.
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone()))
                .expect("metric definitions are valid and unique");
            c
        }
        fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
            reg(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        }
        fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
            reg(
                r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
            )
        }
        fn histogram(
            r: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
            buckets: &[f64],
        ) -> HistogramVec {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            reg(r, HistogramVec::new(opts, labels).expect("valid histogram"))
        }
        let r = &registry;
        let m = Metrics {
            requests: counter(
                r,
                "corral_requests_total",
                "Requests finished, by backend, model, endpoint and HTTP status (0: client left before an answer).",
                &["backend", "model", "endpoint", "code"],
            ),
            duration: histogram(
                r,
                "corral_request_duration_seconds",
                "Time from request to the end of the answer.",
                &["backend", "model", "endpoint"],
                DURATION_BUCKETS,
            ),
            ttft: histogram(
                r,
                "corral_time_to_first_token_seconds",
                "Time from request to the first chunk with generated content.",
                &["backend", "model"],
                TTFT_BUCKETS,
            ),
            tokens: counter(
                r,
                "corral_tokens_total",
                "Tokens from generations' final chunks: kind=prompt (evaluated) or completion (generated).",
                &["backend", "model", "kind"],
            ),
            tokens_per_second: histogram(
                r,
                "corral_generation_tokens_per_second",
                "Generation speed of each answer: eval_count / eval_duration.",
                &["backend", "model"],
                TPS_BUCKETS,
            ),
            load_duration: histogram(
                r,
                "corral_model_load_duration_seconds",
                "Cold model loads reported by backends (load_duration over 100 ms).",
                &["backend", "model"],
                LOAD_BUCKETS,
            ),
            ejections: counter(
                r,
                "corral_backend_ejections_total",
                "Times live-traffic failures ejected the backend.",
                &["backend"],
            ),
            ejections_capped: counter(
                r,
                "corral_backend_ejections_capped_total",
                "Ejections not made because health.max_ejection_percent of the backend's peers were out already.",
                &["backend"],
            ),
            panic_routes: counter(
                r,
                "corral_panic_routes_total",
                "Requests sent to an ejected backend because every candidate was ejected (panic mode).",
                &["backend"],
            ),
            unexpected_answers: counter(
                r,
                "corral_backend_unexpected_answers_total",
                "Complete, well-framed answers that lacked what corral expected (e.g. a final done chunk); not held against the backend.",
                &["backend"],
            ),
            model_loads: counter(
                r,
                "corral_model_loads_total",
                "Model loads on a backend: reason=request (an answer reported a load) or prewarm (corral loaded ahead of need).",
                &["backend", "reason"],
            ),
            queue_wait: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "corral_queue_wait_seconds",
                        "Time requests waited in the admission queue.",
                    )
                    .buckets(QUEUE_BUCKETS.to_vec()),
                )
                .expect("valid histogram"),
            ),
            reloads: counter(
                r,
                "corral_config_reloads_total",
                "Config reloads by result (success, failure).",
                &["result"],
            ),
            client_requests: counter(
                r,
                "corral_client_requests_total",
                "Requests of each client key, by HTTP status (403: model not allowed, 429: over a limit).",
                &["client", "code"],
            ),
            client_tokens: counter(
                r,
                "corral_client_tokens_total",
                "Tokens each client key used, from the answers' final chunks (or OpenAI usage): kind=prompt or completion.",
                &["client", "kind"],
            ),
            known_models: ArcSwap::from_pointee(HashSet::new()),
            series_generation: series::Generation::default(),
            live: Arc::new(live::LiveCollector::new()),
            registry,
        };
        // The live gauges, the process's own figures and the build are always there.
        let live: Box<dyn prometheus::core::Collector> = Box::new(LiveHandle(m.live.clone()));
        let build = gauge(
            &m.registry,
            "corral_build_info",
            "Always 1; the labels say which corral this is.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for c in [
            live,
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            if let Err(e) = m.registry.register(c) {
                tracing::error!(error = %e, "metric collector not registered");
            }
        }
        // Both results exist from the start, so `increase()` sees the first failure.
        for result in ["success", "failure"] {
            m.reloads.with_label_values(&[result]);
        }
        m
    }

    /// The label value for `model`: its normalized name when some backend has it.
    pub fn model_label<'m>(&self, model: Option<&'m ModelName>) -> &'m str {
        match model {
            None => NO_MODEL,
            Some(m) if self.known_models.load().contains(m.as_str()) => m.as_str(),
            Some(_) => OTHER_MODEL,
        }
    }

    /// Refreshes the set of model names allowed as labels from what the backends list
    /// now, creates at zero the series a dashboard plots for each backend and model, and
    /// removes the series of models no backend lists any more. Called by the health
    /// checker after each round of probes.
    pub fn set_known_models(&self, table: &RoutingTable) {
        let mut known = HashSet::new();
        for b in &table.backends {
            let inv = b.state.inventory.load();
            for m in &inv.models {
                let model = m.as_str();
                known.insert(model.to_string());
                for kind in ["prompt", "completion"] {
                    self.tokens.with_label_values(&[b.name(), model, kind]);
                }
                self.ttft.with_label_values(&[b.name(), model]);
                self.load_duration.with_label_values(&[b.name(), model]);
            }
            self.ejections.with_label_values(&[b.name()]);
            for reason in ["request", "prewarm"] {
                self.model_loads.with_label_values(&[b.name(), reason]);
            }
        }
        if *self.known_models.load_full() != known {
            self.prune_models(&known);
            self.known_models.store(Arc::new(known));
        }
    }

    /// Removes every series whose `model` label is no longer a listed model.
    fn prune_models(&self, known: &HashSet<String>) {
        let keep = |v: &str| known.contains(v) || v == OTHER_MODEL || v == NO_MODEL;
        prune(&self.requests, keep);
        prune(&self.duration, keep);
        prune(&self.ttft, keep);
        prune(&self.tokens, keep);
        prune(&self.tokens_per_second, keep);
        prune(&self.load_duration, keep);
        self.series_generation.bump();
    }

    fn request_vecs(&self) -> series::RequestVecs<'_> {
        series::RequestVecs {
            requests: &self.requests,
            duration: &self.duration,
            ttft: &self.ttft,
            tokens: &self.tokens,
            tokens_per_second: &self.tokens_per_second,
        }
    }

    /// Records one finished request.
    pub fn observe_request(&self, r: &RequestRecord) {
        let backend = r.backend.unwrap_or(NO_BACKEND);
        let model = self.model_label(r.model);
        let vecs = self.request_vecs();
        series::with_series(
            &self.series_generation,
            (backend, model, r.endpoint),
            |series| {
                series.requests(&vecs, code_label(r.status)).inc();
                series.duration(&vecs).observe(r.duration.as_secs_f64());
                if let Some(t) = r.ttft {
                    series.ttft(&vecs).observe(t.as_secs_f64());
                }
                if let Some(s) = r.tokens {
                    let [prompt, completion] = series.tokens(&vecs);
                    prompt.inc_by(s.prompt_tokens);
                    completion.inc_by(s.completion_tokens);
                    if s.completion_ns > 0 && s.completion_tokens > 0 {
                        let tps = s.completion_tokens as f64 / (s.completion_ns as f64 / 1e9);
                        series.tokens_per_second(&vecs).observe(tps);
                    }
                }
            },
        );
        if let Some(q) = r.queue_wait {
            self.queue_wait.observe(q.as_secs_f64());
        }
        if let Some(s) = r.tokens {
            // Sub-100 ms "loads" are a resident model being touched, not a load.
            if s.load_ns > 100_000_000 {
                self.load_duration
                    .with_label_values(&[backend, model])
                    .observe(s.load_ns as f64 / 1e9);
                self.model_loads
                    .with_label_values(&[backend, "request"])
                    .inc();
            }
        }
    }

    pub fn backend_ejected(&self, backend: &str) {
        self.ejections.with_label_values(&[backend]).inc();
    }

    pub fn ejection_capped(&self, backend: &str) {
        self.ejections_capped.with_label_values(&[backend]).inc();
    }

    pub fn panic_route(&self, backend: &str) {
        self.panic_routes.with_label_values(&[backend]).inc();
    }

    pub fn unexpected_answer(&self, backend: &str) {
        self.unexpected_answers.with_label_values(&[backend]).inc();
    }

    pub fn model_prewarmed(&self, backend: &str) {
        self.model_loads
            .with_label_values(&[backend, "prewarm"])
            .inc();
    }

    /// Creates at zero the token series of the configured client keys, so a dashboard
    /// sees every key before its first answer. Names come from the config: bounded.
    pub fn register_clients<'a>(&self, names: impl Iterator<Item = &'a str>) {
        for name in names {
            for kind in ["prompt", "completion"] {
                self.client_tokens.with_label_values(&[name, kind]);
            }
        }
    }

    /// One finished request of a client key.
    pub fn client_request(&self, client: &str, status: u16) {
        self.client_requests
            .with_label_values(&[client, code_label(status)])
            .inc();
    }

    pub fn client_tokens(&self, client: &str, prompt: u64, completion: u64) {
        self.client_tokens
            .with_label_values(&[client, "prompt"])
            .inc_by(prompt);
        self.client_tokens
            .with_label_values(&[client, "completion"])
            .inc_by(completion);
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Where the live gauges are read from (the server being built).
    pub fn set_live_source(&self, source: LiveSource) {
        self.live.set_source(source);
    }

    /// The one registry, for families defined elsewhere (Raft).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of everything.
    pub fn render_text(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Removes the series of `vec` whose `model` label `keep` rejects.
fn prune<T: MetricVecBuilder>(vec: &MetricVec<T>, keep: impl Fn(&str) -> bool) {
    // Label pairs come sorted by name; removal wants the vector's declaration order.
    let Some(order) = vec.desc().first().map(|d| d.variable_labels.clone()) else {
        return;
    };
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels = metric.get_label();
            let value = |name: &str| labels.iter().find(|l| l.name() == name).map(|l| l.value());
            if value("model").is_some_and(|m| !keep(m)) {
                let values: Vec<&str> = order.iter().filter_map(|n| value(n)).collect();
                drop(vec.remove_label_values(&values));
            }
        }
    }
}

/// Lets the registry own a handle to the live collector the metrics keep.
struct LiveHandle(Arc<live::LiveCollector>);

impl prometheus::core::Collector for LiveHandle {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }
    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_register_and_unknown_models_are_other() {
        let m = Metrics::new();
        let known = ModelName::new("llama3");
        m.known_models
            .store(Arc::new([known.as_str().to_string()].into_iter().collect()));
        let unknown = ModelName::new("made-up-model");
        assert_eq!(m.model_label(Some(&known)), "llama3:latest");
        assert_eq!(m.model_label(Some(&unknown)), OTHER_MODEL);
        assert_eq!(m.model_label(None), NO_MODEL);
        m.observe_request(&RequestRecord {
            backend: Some("a"),
            model: Some(&known),
            endpoint: "chat",
            status: 200,
            duration: Duration::from_millis(30),
            ttft: Some(Duration::from_millis(10)),
            queue_wait: None,
            tokens: Some(TokenStats {
                prompt_tokens: 7,
                completion_tokens: 20,
                completion_ns: 1_000_000_000,
                load_ns: 2_000_000_000,
            }),
        });
        m.config_reload(false);
        let text = m.render_text();
        assert!(text.contains(
            r#"corral_requests_total{backend="a",code="200",endpoint="chat",model="llama3:latest"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"corral_tokens_total{backend="a",kind="completion",model="llama3:latest"} 20"#
        ));
        assert!(text.contains("corral_model_load_duration_seconds_count"));
        assert!(text.contains(r#"corral_config_reloads_total{result="failure"} 1"#));
        let json = m.render_json();
        let row = &json.summary[0];
        assert_eq!(
            (row.requests, row.prompt_tokens, row.completion_tokens),
            (1, 7, 20)
        );
        assert_eq!(row.tokens_per_second_avg, Some(20.0));
        assert_eq!(json.config_reloads_failure, 1);
        // No server yet: an empty queue, and serving (the gauges read the same).
        assert_eq!((json.queue_depth, json.serving), (0, true));
        assert!(text.contains("corral_serving 1"), "{text}");
    }

    #[test]
    fn series_of_a_model_that_leaves_the_fleet_are_removed() {
        let m = Metrics::new();
        let pool = crate::pool::Pool::new(
            crate::config::Config::parse("backends: [{name: a, url: 'h:1'}]", "t").unwrap(),
        );
        let listing = |models: &[&str]| {
            let inv = crate::pool::Inventory {
                models: models.iter().map(|n| ModelName::new(n)).collect(),
                ..Default::default()
            };
            pool.load().backends[0]
                .state
                .apply_inventory(inv, crate::pool::now_ms());
            m.set_known_models(&pool.load());
        };
        listing(&["x", "y"]);
        let x = ModelName::new("x");
        let request_for_x = || {
            m.observe_request(&RequestRecord {
                backend: Some("a"),
                model: Some(&x),
                endpoint: "chat",
                status: 200,
                duration: Duration::from_millis(30),
                ttft: Some(Duration::from_millis(10)),
                queue_wait: None,
                tokens: None,
            })
        };
        request_for_x();
        let text = m.render_text();
        assert!(text.contains(r#"model="x:latest""#));
        // Present at zero before any request: what a dashboard plots for `y`.
        assert!(
            text.contains(r#"corral_tokens_total{backend="a",kind="prompt",model="y:latest"} 0"#)
        );
        assert!(text.contains("corral_build_info{version="));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.contains(r#"corral_backend_ejections_total{backend="a"} 0"#));
        listing(&["y"]);
        let text = m.render_text();
        assert!(!text.contains(r#"model="x:latest""#), "{text}");
        assert!(text.contains(r#"model="y:latest""#));
        // Back in the fleet: its series start again, not into a removed series that
        // this thread's handle cache still held.
        listing(&["x", "y"]);
        request_for_x();
        let text = m.render_text();
        let series =
            r#"corral_requests_total{backend="a",code="200",endpoint="chat",model="x:latest"} 1"#;
        assert!(text.contains(series), "{text}");
    }

    #[test]
    fn the_grafana_dashboard_uses_only_these_names() {
        let dash = include_str!("../../conf/grafana-dashboard.json");
        let src = [include_str!("mod.rs"), include_str!("live.rs")].concat();
        let mut seen = 0;
        for (i, _) in dash.match_indices("corral_") {
            let name: String = dash[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                src.contains(&format!("\"{base}\"")),
                "{base} is not defined here"
            );
            seen += 1;
        }
        assert!(seen > 10);
    }

    #[test]
    fn code_labels() {
        assert_eq!(code_label(200), "200");
        assert_eq!(code_label(0), "0");
        assert_eq!(code_label(999), "other");
    }
}
