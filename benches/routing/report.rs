//! From raw turn outcomes and fleet counters to the numbers the front-ends are compared
//! on: one row per front-end and scenario, the markdown tables for the README, and a
//! JSON file with everything (raw outcomes included) for whoever wants to dig.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::fleet::{FleetSpec, SimStats};
use crate::frontends::FrontEndSpec;
use crate::goals::Goals;
use crate::player::{Outcome, RunResult};
use crate::workload::WorkloadSpec;

#[derive(Debug, Clone, Serialize)]
pub struct BoxReport {
    pub name: String,
    #[serde(flatten)]
    pub during_run: SimStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct FrontEndReport {
    pub id: String,
    pub label: String,
    /// `measured`, `skipped` (nginx missing) or `error` (could not be set up).
    pub status: &'static str,
    pub note: Option<String>,
    pub planned: usize,
    /// Turns that got an outcome (turns in flight at the deadline have none).
    pub sent: usize,
    pub ok: usize,
    /// Planned turns that did not complete: errors, timeouts, turns cut by the
    /// deadline, and the turns a failed session never sent.
    pub failed: usize,
    /// Error messages (first 80 characters) and how often each was seen.
    pub errors: BTreeMap<String, usize>,
    pub ttft_mean_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p90_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub tokens_per_sec_mean: Option<f64>,
    /// Model loads during the run, summed over the fleet (initial residency is free).
    pub cold_loads: u64,
    pub evictions: u64,
    /// cached / (cached + evaluated) prompt tokens, summed over the fleet.
    pub cache_reuse: Option<f64>,
    pub prompt_tokens_cached: u64,
    pub prompt_tokens_evaluated: u64,
    /// Follow-up turns served by the same backend as the session's previous turn
    /// (from `X-Corral-Backend`, so corral only).
    pub sticky_followups: Option<f64>,
    pub routes: BTreeMap<String, usize>,
    pub wall_s: f64,
    pub deadline_hit: bool,
    pub boxes: Vec<BoxReport>,
    pub outcomes: Vec<Outcome>,
}

impl FrontEndReport {
    /// A row with no measurement, for a front-end that was skipped or failed to start.
    pub fn unmeasured(
        spec: &FrontEndSpec,
        status: &'static str,
        note: String,
        planned: usize,
    ) -> Self {
        FrontEndReport {
            id: spec.id.into(),
            label: spec.label.into(),
            status,
            note: Some(note),
            planned,
            sent: 0,
            ok: 0,
            failed: planned,
            errors: BTreeMap::new(),
            ttft_mean_ms: None,
            ttft_p50_ms: None,
            ttft_p90_ms: None,
            ttft_p99_ms: None,
            latency_p50_ms: None,
            latency_p99_ms: None,
            tokens_per_sec_mean: None,
            cold_loads: 0,
            evictions: 0,
            cache_reuse: None,
            prompt_tokens_cached: 0,
            prompt_tokens_evaluated: 0,
            sticky_followups: None,
            routes: BTreeMap::new(),
            wall_s: 0.0,
            deadline_hit: false,
            boxes: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    pub fn measured(
        spec: &FrontEndSpec,
        planned: usize,
        run: RunResult,
        boxes: Vec<BoxReport>,
        note: Option<String>,
    ) -> Self {
        let ok: Vec<&Outcome> = run.outcomes.iter().filter(|o| o.ok).collect();
        let mut ttft: Vec<f64> = ok.iter().filter_map(|o| o.ttft_ms).collect();
        let mut latency: Vec<f64> = ok.iter().map(|o| o.latency_ms).collect();
        let rates: Vec<f64> = ok.iter().filter_map(|o| o.tokens_per_sec).collect();
        let mut errors = BTreeMap::new();
        for o in &run.outcomes {
            if let Some(e) = &o.error {
                *errors.entry(e.chars().take(80).collect()).or_insert(0) += 1;
            }
        }
        let unfinished = planned.saturating_sub(run.outcomes.len());
        if run.deadline_hit && unfinished > 0 {
            errors.insert("cut by the run deadline or never sent".into(), unfinished);
        } else if unfinished > 0 {
            errors.insert(
                "not sent: an earlier turn of the session failed".into(),
                unfinished,
            );
        }
        let mut routes = BTreeMap::new();
        for o in &run.outcomes {
            if let Some(r) = &o.route {
                *routes.entry(r.clone()).or_insert(0) += 1;
            }
        }
        let total = |f: fn(&SimStats) -> u64| boxes.iter().map(|b| f(&b.during_run)).sum::<u64>();
        let cached = total(|s| s.prompt_tokens_cached);
        let evaluated = total(|s| s.prompt_tokens_evaluated);
        FrontEndReport {
            id: spec.id.into(),
            label: spec.label.into(),
            status: "measured",
            note,
            planned,
            sent: run.outcomes.len(),
            ok: ok.len(),
            failed: planned - ok.len(),
            errors,
            ttft_mean_ms: mean(&ttft),
            ttft_p50_ms: percentile(&mut ttft, 50.0),
            ttft_p90_ms: percentile(&mut ttft, 90.0),
            ttft_p99_ms: percentile(&mut ttft, 99.0),
            latency_p50_ms: percentile(&mut latency, 50.0),
            latency_p99_ms: percentile(&mut latency, 99.0),
            tokens_per_sec_mean: mean(&rates),
            cold_loads: total(|s| s.loads),
            evictions: total(|s| s.evictions),
            cache_reuse: ratio(cached as f64, (cached + evaluated) as f64),
            prompt_tokens_cached: cached,
            prompt_tokens_evaluated: evaluated,
            sticky_followups: sticky(&run.outcomes),
            routes,
            wall_s: run.wall.as_secs_f64(),
            deadline_hit: run.deadline_hit,
            boxes,
            outcomes: run.outcomes,
        }
    }
}

/// Nearest-rank percentile (an observed value, no interpolation).
fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then_some(a / b)
}

fn sticky(outcomes: &[Outcome]) -> Option<f64> {
    let mut by_session: BTreeMap<usize, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.ok) {
        by_session.entry(o.session).or_default().push(o);
    }
    let (mut same, mut followups) = (0, 0);
    for turns in by_session.values_mut() {
        turns.sort_by_key(|o| o.turn);
        for pair in turns.windows(2) {
            if let (Some(a), Some(b)) = (&pair[0].backend, &pair[1].backend) {
                followups += 1;
                same += usize::from(a == b);
            }
        }
    }
    ratio(same as f64, followups as f64)
}

pub fn secs(ms: Option<f64>) -> String {
    ms.map_or("–".into(), |ms| format!("{:.2} s", ms / 1000.0))
}

/// One scenario of the matrix: what it ran and what each front-end did.
#[derive(Serialize)]
pub struct ScenarioReport {
    pub id: &'static str,
    pub about: &'static str,
    /// `measured` or `skipped` (the sim lacks a flag the fleet needs).
    pub status: &'static str,
    pub note: Option<String>,
    /// Slots and start residency per box.
    pub layout: String,
    pub fleet: FleetSpec,
    pub workload: WorkloadSpec,
    pub workload_fingerprint: String,
    /// Loads no router can avoid: models the workload asks for that no box holds at
    /// start.
    pub load_floor: usize,
    /// `None` for a skipped scenario.
    pub goals: Option<Goals>,
    pub results: Vec<FrontEndReport>,
}

/// What each scenario is, for the reader of the results table.
pub fn legend_markdown(scenarios: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "| scenario | what varies | boxes: slots x [resident at start] | sessions x turns |\n\
         |---|---|---|---:|\n",
    );
    for s in scenarios {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} x {} |\n",
            s.id, s.about, s.layout, s.workload.sessions, s.workload.turns
        ));
    }
    out
}

/// Every front-end of every scenario, in one table.
pub fn results_markdown(scenarios: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "| scenario | front-end | TTFT mean | p50 | p90 | p99 | cold loads | cache reuse | failed | wall |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in scenarios {
        if s.status != "measured" {
            let note = s.note.as_deref().unwrap_or_default();
            out.push_str(&format!(
                "| `{}` | {}: {note} | | | | | | | | |\n",
                s.id, s.status
            ));
            continue;
        }
        for (index, r) in s.results.iter().enumerate() {
            let scenario = if index == 0 {
                format!("`{}`", s.id)
            } else {
                String::new()
            };
            out.push_str(&format!("| {scenario} | {} | ", r.label));
            if r.status != "measured" {
                let note = r.note.as_deref().unwrap_or_default();
                let note = note.lines().next().unwrap_or_default();
                out.push_str(&format!("{}: {note} | | | | | | | |\n", r.status));
                continue;
            }
            out.push_str(&format!(
                "{} | {} | {} | {} | {} | {} | {}/{} | {:.0} s{} |\n",
                secs(r.ttft_mean_ms),
                secs(r.ttft_p50_ms),
                secs(r.ttft_p90_ms),
                secs(r.ttft_p99_ms),
                r.cold_loads,
                r.cache_reuse
                    .map_or("–".into(), |c| format!("{:.0} %", c * 100.0)),
                r.failed,
                r.planned,
                r.wall_s,
                if r.deadline_hit { " (deadline)" } else { "" },
            ));
        }
    }
    out
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("serialize report: {e}"))?;
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
