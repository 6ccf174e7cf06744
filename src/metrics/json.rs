//! The metrics as JSON for `GET /api/v1/metrics` and `corral metrics`: every family's
//! samples plus a per-backend-and-model overview.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Metrics;

impl Metrics {
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
