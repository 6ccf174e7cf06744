//! The metrics as JSON for `GET /api/v1/metrics` and `corral metrics`: every family's
//! samples plus a per-backend-and-model overview.
//!
//! The overview is read from the metric handles themselves and from the live
//! collector's reading, so no family is looked up by its name.

use std::collections::BTreeMap;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::proto::{Histogram, Metric, MetricType};
use serde::{Deserialize, Serialize};

use super::Metrics;

impl Metrics {
    /// The same as JSON: a per-backend-and-model summary plus every family.
    pub fn render_json(&self) -> MetricsView {
        let live = self.live.reading();
        let mut view = MetricsView {
            queue_depth: live.queue_depth as u64,
            serving: live.serving,
            ..MetricsView::default()
        };
        for m in series(&self.reloads) {
            let n = m.get_counter().value() as u64;
            match label(&m, "result") {
                "success" => view.config_reloads_success = n,
                _ => view.config_reloads_failure = n,
            }
        }
        let mut rows = Rows::default();
        for m in series(&self.requests) {
            let n = m.get_counter().value() as u64;
            let row = rows.of(&m);
            row.requests += n;
            let code = label(&m, "code");
            if code.starts_with('5') || code == "0" {
                row.errors += n;
            }
        }
        for m in series(&self.ttft) {
            let row = rows.of(&m);
            let h = m.get_histogram();
            row.ttft_count += h.sample_count();
            row.ttft_avg_seconds = mean(h);
        }
        for m in series(&self.tokens) {
            let n = m.get_counter().value() as u64;
            let row = rows.of(&m);
            match label(&m, "kind") {
                "prompt" => row.prompt_tokens += n,
                _ => row.completion_tokens += n,
            }
        }
        for m in series(&self.tokens_per_second) {
            rows.of(&m).tokens_per_second_avg = mean(m.get_histogram());
        }
        view.summary = rows.0.into_values().collect();
        view.families = self.registry.gather().iter().map(family).collect();
        view
    }
}

/// The series one of our own vectors holds now.
fn series<T: MetricVecBuilder>(vec: &MetricVec<T>) -> Vec<Metric> {
    vec.collect()
        .into_iter()
        .flat_map(|mut f| f.take_metric())
        .collect()
}

/// A label's value ("" when the series has no such label).
fn label<'m>(m: &'m Metric, name: &str) -> &'m str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

fn mean(h: &Histogram) -> Option<f64> {
    let count = h.sample_count();
    (count > 0).then(|| h.sample_sum() / count as f64)
}

/// The overview rows, one per backend and model.
#[derive(Default)]
struct Rows(BTreeMap<(String, String), SummaryRow>);

impl Rows {
    fn of(&mut self, m: &Metric) -> &mut SummaryRow {
        let (backend, model) = (label(m, "backend"), label(m, "model"));
        self.0
            .entry((backend.to_string(), model.to_string()))
            .or_insert_with(|| SummaryRow {
                backend: backend.to_string(),
                model: model.to_string(),
                ..SummaryRow::default()
            })
    }
}

/// One gathered family, whatever it is, with all its samples.
fn family(f: &prometheus::proto::MetricFamily) -> FamilyView {
    let kind = f.get_field_type();
    let metrics = f
        .get_metric()
        .iter()
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let h = m.get_histogram();
            let (value, count, sum) = match kind {
                MetricType::COUNTER => (Some(m.get_counter().value()), None, None),
                MetricType::GAUGE => (Some(m.get_gauge().value()), None, None),
                MetricType::HISTOGRAM => (None, Some(h.sample_count()), Some(h.sample_sum())),
                _ => (None, None, None),
            };
            SampleView {
                labels,
                value,
                count,
                sum,
            }
        })
        .collect();
    FamilyView {
        name: f.name().to_string(),
        help: f.help().to_string(),
        kind: format!("{kind:?}").to_lowercase(),
        metrics,
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
