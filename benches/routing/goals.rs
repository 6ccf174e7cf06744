//! The project's routing goal, checked per scenario (issue 8): corral `affinity` against
//! nginx `least_conn` in front of the same fleet — mean and p90 TTFT at most half,
//! cold loads at most 0.3×, and no failed request.

use serde::Serialize;

use crate::report::{FrontEndReport, ScenarioReport};

const AFFINITY: &str = "corral-affinity";
const BASELINE: &str = "nginx-least-conn";

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub name: &'static str,
    /// affinity / least_conn for the ratios; affinity's failed turns for the last goal.
    pub value: Option<f64>,
    pub limit: f64,
    /// `None` when a front-end it needs was not measured.
    pub met: Option<bool>,
    /// The numbers behind the value, or why there is none.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Goals {
    pub mean_ttft: Goal,
    pub p90_ttft: Goal,
    pub cold_loads: Goal,
    pub failures: Goal,
}

impl Goals {
    fn all(&self) -> [&Goal; 4] {
        [
            &self.mean_ttft,
            &self.p90_ttft,
            &self.cold_loads,
            &self.failures,
        ]
    }
}

pub fn check(results: &[FrontEndReport]) -> Goals {
    let find = |id: &str| {
        results
            .iter()
            .find(|r| r.id == id && r.status == "measured")
    };
    let (affinity, baseline) = (find(AFFINITY), find(BASELINE));
    let ratio =
        |name: &'static str, limit: f64, unit: &str, f: fn(&FrontEndReport) -> Option<f64>| {
            let (a, b) = match (affinity.and_then(f), baseline.and_then(f)) {
                (Some(a), Some(b)) => (a, b),
                _ => {
                    return missing(
                        name,
                        limit,
                        format!("{AFFINITY} or {BASELINE} not measured"),
                    )
                }
            };
            // No loads against no loads meets the goal; anything against zero does not.
            let (value, met) = if b > 0.0 {
                (Some(a / b), Some(a / b <= limit))
            } else {
                (None, Some(a == 0.0))
            };
            Goal {
                name,
                value,
                limit,
                met,
                detail: format!("{a:.0}{unit} vs {b:.0}{unit}"),
            }
        };
    let failures = match affinity {
        Some(r) => Goal {
            name: "affinity failed turns",
            value: Some(r.failed as f64),
            limit: 0.0,
            met: Some(r.failed == 0),
            detail: format!("{} of {}", r.failed, r.planned),
        },
        None => missing(
            "affinity failed turns",
            0.0,
            format!("{AFFINITY} not measured"),
        ),
    };
    Goals {
        mean_ttft: ratio("mean TTFT / least_conn", 0.5, " ms", |r| r.ttft_mean_ms),
        p90_ttft: ratio("p90 TTFT / least_conn", 0.5, " ms", |r| r.ttft_p90_ms),
        cold_loads: ratio("cold loads / least_conn", 0.3, "", |r| {
            Some(r.cold_loads as f64)
        }),
        failures,
    }
}

fn missing(name: &'static str, limit: f64, why: String) -> Goal {
    Goal {
        name,
        value: None,
        limit,
        met: None,
        detail: why,
    }
}

/// One row per scenario: each goal's value and whether it is met.
pub fn markdown(scenarios: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "| scenario | mean TTFT ≤ 0.5× | p90 TTFT ≤ 0.5× | cold loads ≤ 0.3× (floor) | failed = 0 | all |\n\
         |---|---:|---:|---:|---:|---|\n",
    );
    for s in scenarios {
        let Some(goals) = &s.goals else { continue };
        let all = if goals.all().iter().all(|g| g.met == Some(true)) {
            "met"
        } else if goals.all().iter().any(|g| g.met == Some(false)) {
            "missed"
        } else {
            "incomplete"
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} ({}; floor {}) | {} | {all} |\n",
            s.id,
            cell(&goals.mean_ttft),
            cell(&goals.p90_ttft),
            cell(&goals.cold_loads),
            goals.cold_loads.detail,
            s.load_floor,
            cell(&goals.failures),
        ));
    }
    out
}

/// The value and a mark: ✓ met, ✗ missed, ? not measured.
fn cell(goal: &Goal) -> String {
    let mark = match goal.met {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "?",
    };
    match goal.value {
        Some(v) if goal.limit > 0.0 => format!("{v:.2} {mark}"),
        // A count against a limit of zero: the count says more than a ratio.
        Some(_) => format!("{} {mark}", goal.detail),
        None => format!("– {mark}"),
    }
}
