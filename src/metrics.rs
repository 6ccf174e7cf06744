//! Every Prometheus metric corral exports, defined in one place, in one registry.
//!
//! Per-request metrics are recorded once, when a request ends (`proxy::outcome`), from
//! figures the request context already holds. Gauges that mirror live state (backend
//! up, in-flight, ejected, queue depth) are not touched on the hot path at all: they
//! are read from the pool when `/metrics` is scraped.
//!
//! Label cardinality is bounded: `backend` comes from the pool, `endpoint` and `code`
//! from fixed sets, and `model` only from the models some backend reported in its
//! inventory; any other name a client sends is counted as `other`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use serde::{Deserialize, Serialize};

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
    backend_up: IntGaugeVec,
    backend_in_flight: IntGaugeVec,
    backend_ejected: IntGaugeVec,
    backend_draining: IntGaugeVec,
    ejections: IntCounterVec,
    ejections_capped: IntCounterVec,
    panic_routes: IntCounterVec,
    unexpected_answers: IntCounterVec,
    model_loads: IntCounterVec,
    queue_depth: IntGauge,
    queue_wait: Histogram,
    reloads: IntCounterVec,
    serving: IntGauge,
    /// Model names that may be used as label values (from the backends' inventories).
    known_models: ArcSwap<HashSet<String>>,
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
            backend_up: gauge(
                r,
                "corral_backend_up",
                "1 when the backend passes its health probes.",
                &["backend"],
            ),
            backend_in_flight: gauge(
                r,
                "corral_backend_in_flight",
                "Requests corral has out at the backend now.",
                &["backend"],
            ),
            backend_ejected: gauge(
                r,
                "corral_backend_ejected",
                "1 while live-traffic failures keep the backend out.",
                &["backend"],
            ),
            backend_draining: gauge(
                r,
                "corral_backend_draining",
                "1 while an operator drains the backend.",
                &["backend"],
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
            queue_depth: reg(
                r,
                IntGauge::new(
                    "corral_queue_depth",
                    "Requests waiting in corral for a free backend slot.",
                )
                .expect("valid gauge"),
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
            serving: reg(
                r,
                IntGauge::new(
                    "corral_serving",
                    "1 while this replica takes proxied requests (0: maintenance mode).",
                )
                .expect("valid gauge"),
            ),
            known_models: ArcSwap::from_pointee(HashSet::new()),
            registry,
        };
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

    /// Refreshes the set of model names allowed as labels from the backends'
    /// inventories. Called by the health checker after each round of probes.
    pub fn set_known_models(&self, table: &RoutingTable) {
        let mut known = HashSet::new();
        for b in &table.backends {
            let inv = b.state.inventory.load();
            known.extend(inv.models.iter().map(|m| m.as_str().to_string()));
        }
        if *self.known_models.load_full() != known {
            self.known_models.store(Arc::new(known));
        }
    }

    /// Records one finished request.
    pub fn observe_request(&self, r: &RequestRecord) {
        let backend = r.backend.unwrap_or(NO_BACKEND);
        let model = self.model_label(r.model);
        self.requests
            .with_label_values(&[backend, model, r.endpoint, code_label(r.status)])
            .inc();
        self.duration
            .with_label_values(&[backend, model, r.endpoint])
            .observe(r.duration.as_secs_f64());
        if let Some(t) = r.ttft {
            self.ttft
                .with_label_values(&[backend, model])
                .observe(t.as_secs_f64());
        }
        if let Some(q) = r.queue_wait {
            self.queue_wait.observe(q.as_secs_f64());
        }
        if let Some(s) = r.tokens {
            self.tokens
                .with_label_values(&[backend, model, "prompt"])
                .inc_by(s.prompt_tokens);
            self.tokens
                .with_label_values(&[backend, model, "completion"])
                .inc_by(s.completion_tokens);
            if s.completion_ns > 0 && s.completion_tokens > 0 {
                let tps = s.completion_tokens as f64 / (s.completion_ns as f64 / 1e9);
                self.tokens_per_second
                    .with_label_values(&[backend, model])
                    .observe(tps);
            }
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

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Sets the gauges that mirror live state; called on every scrape.
    pub fn refresh(&self, table: &RoutingTable, queue_depth: usize, serving: bool) {
        // Reset first so removed backends disappear from the output.
        for g in [
            &self.backend_up,
            &self.backend_in_flight,
            &self.backend_ejected,
            &self.backend_draining,
        ] {
            g.reset();
        }
        for b in &table.backends {
            let name = [b.name()];
            let s = &b.state;
            self.backend_up
                .with_label_values(&name)
                .set(s.is_healthy() as i64);
            self.backend_in_flight
                .with_label_values(&name)
                .set(s.in_flight() as i64);
            self.backend_ejected
                .with_label_values(&name)
                .set(s.passive.is_ejected() as i64);
            self.backend_draining
                .with_label_values(&name)
                .set(s.is_draining() as i64);
            // Counters a dashboard plots exist at zero before their first event.
            self.ejections.with_label_values(&name);
            for reason in ["request", "prewarm"] {
                self.model_loads.with_label_values(&[b.name(), reason]);
            }
        }
        self.queue_depth.set(queue_depth as i64);
        self.serving.set(serving as i64);
    }

    /// Prometheus text exposition of everything.
    pub fn render_text(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The same as JSON: a per-backend-and-model summary plus every family.
    pub fn render_json(&self) -> MetricsView {
        let families = self.registry.gather();
        let mut view = MetricsView::default();
        let mut rows: BTreeMap<(String, String), SummaryRow> = BTreeMap::new();
        for f in &families {
            let mut fam = FamilyView {
                name: f.name().to_string(),
                help: f.help().to_string(),
                kind: format!("{:?}", f.get_field_type()).to_lowercase(),
                metrics: Vec::new(),
            };
            for m in f.get_metric() {
                let labels: BTreeMap<String, String> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                let h = m.get_histogram();
                let (value, count, sum) = match f.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => {
                        (Some(m.get_counter().value()), None, None)
                    }
                    prometheus::proto::MetricType::GAUGE => {
                        (Some(m.get_gauge().value()), None, None)
                    }
                    prometheus::proto::MetricType::HISTOGRAM => {
                        (None, Some(h.sample_count()), Some(h.sample_sum()))
                    }
                    _ => (None, None, None),
                };
                summarize(&mut view, &mut rows, f.name(), &labels, value, count, sum);
                fam.metrics.push(SampleView {
                    labels,
                    value,
                    count,
                    sum,
                });
            }
            view.families.push(fam);
        }
        view.summary = rows.into_values().collect();
        view
    }
}

/// Folds one sample into the overview rows.
fn summarize(
    view: &mut MetricsView,
    rows: &mut BTreeMap<(String, String), SummaryRow>,
    family: &str,
    labels: &BTreeMap<String, String>,
    value: Option<f64>,
    count: Option<u64>,
    sum: Option<f64>,
) {
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    match family {
        "corral_queue_depth" => view.queue_depth = value.unwrap_or(0.0) as u64,
        "corral_serving" => view.serving = value.unwrap_or(1.0) > 0.0,
        "corral_config_reloads_total" => {
            let n = value.unwrap_or(0.0) as u64;
            match label("result").as_str() {
                "success" => view.config_reloads_success = n,
                _ => view.config_reloads_failure = n,
            }
        }
        "corral_requests_total"
        | "corral_time_to_first_token_seconds"
        | "corral_tokens_total"
        | "corral_generation_tokens_per_second" => {
            let row = rows
                .entry((label("backend"), label("model")))
                .or_insert_with(|| SummaryRow {
                    backend: label("backend"),
                    model: label("model"),
                    ..SummaryRow::default()
                });
            let n = value.unwrap_or(0.0) as u64;
            match family {
                "corral_requests_total" => {
                    row.requests += n;
                    if label("code").starts_with('5') || label("code") == "0" {
                        row.errors += n;
                    }
                }
                "corral_tokens_total" if label("kind") == "prompt" => row.prompt_tokens += n,
                "corral_tokens_total" => row.completion_tokens += n,
                "corral_time_to_first_token_seconds" => {
                    if let (Some(c), Some(s)) = (count, sum) {
                        row.ttft_count += c;
                        row.ttft_avg_seconds = (c > 0).then(|| s / c as f64);
                    }
                }
                _ => {
                    if let (Some(c), Some(s)) = (count, sum) {
                        row.tokens_per_second_avg = (c > 0).then(|| s / c as f64);
                    }
                }
            }
        }
        _ => {}
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MetricsView {
    /// One row per backend and model that served requests.
    pub summary: Vec<SummaryRow>,
    pub queue_depth: u64,
    pub serving: bool,
    pub config_reloads_success: u64,
    pub config_reloads_failure: u64,
    pub families: Vec<FamilyView>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SummaryRow {
    pub backend: String,
    pub model: String,
    pub requests: u64,
    /// 5xx answers and requests the client left before an answer.
    pub errors: u64,
    pub ttft_count: u64,
    pub ttft_avg_seconds: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub tokens_per_second_avg: Option<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FamilyView {
    pub name: String,
    pub help: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub metrics: Vec<SampleView>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SampleView {
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
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
    }

    #[test]
    fn the_grafana_dashboard_uses_only_these_names() {
        let dash = include_str!("../conf/grafana-dashboard.json");
        let src = include_str!("metrics.rs");
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
