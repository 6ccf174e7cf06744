//! Human tables for the client views: fixed columns, widest cell decides.

use crate::admin::{BackendView, StatusView};
use crate::metrics::MetricsView;

/// Lays out rows under a header, columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

pub fn status(s: &StatusView) -> String {
    let mut out = vec![
        format!("corral {}", s.version),
        format!(
            "serving     {}",
            if s.serving {
                "yes"
            } else {
                "NO (maintenance mode)"
            }
        ),
        format!("strategy    {}", s.strategy),
        format!(
            "backends    {} routable / {} total",
            s.backends_healthy, s.backends_total
        ),
        format!("in flight   {}", s.in_flight),
        format!("queued      {}", s.queue_depth),
        format!(
            "reloads     {} ok, {} failed",
            s.reloads.successes, s.reloads.failures
        ),
    ];
    for p in &s.placement {
        let on = if p.loaded_on.is_empty() {
            "nowhere".to_string()
        } else {
            p.loaded_on.join(",")
        };
        out.push(format!(
            "model       {}: demand {:.1} slots (now {}), loaded on {on} ({} slots)",
            p.model, p.demand, p.now, p.slots
        ));
    }
    if let Some(e) = &s.reloads.last_error {
        out.push(format!("last reload error: {e}"));
    }
    if !s.reloads.restart_needed.is_empty() {
        out.push(format!(
            "restart needed to apply: {}",
            s.reloads.restart_needed.join(", ")
        ));
    }
    out.join("\n")
}

fn state(b: &BackendView) -> String {
    let mut s = if !b.healthy {
        "down"
    } else if b.ejected {
        "ejected"
    } else if b.probation {
        "probation"
    } else {
        "up"
    }
    .to_string();
    if b.draining {
        s.push_str(",draining");
    }
    s
}

/// Probe errors carry the whole reqwest chain; a table cell shows its start (`--json`
/// has all of it).
fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX - 1).collect();
    out.push('…');
    out
}

pub fn backends(list: &[BackendView]) -> String {
    if list.is_empty() {
        return "no backends".to_string();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.url.clone(),
                state(b),
                format!("{}/{}", b.in_flight, b.max_concurrency),
                b.requests.to_string(),
                if b.dynamic { "api" } else { "yaml" }.to_string(),
                if b.models.is_empty() {
                    "-".to_string()
                } else {
                    b.models.join(",")
                },
                if b.resident.is_empty() {
                    "-".to_string()
                } else {
                    b.resident.join(",")
                },
                b.last_error.as_deref().map(clip).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "URL",
            "STATE",
            "IN-FLIGHT",
            "REQUESTS",
            "SOURCE",
            "MODELS",
            "LOADED",
            "ERROR",
        ],
        &rows,
    )
}

pub fn metrics(m: &MetricsView) -> String {
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.0}ms", s * 1000.0));
    let rows: Vec<Vec<String>> = m
        .summary
        .iter()
        .map(|r| {
            vec![
                r.backend.clone(),
                r.model.clone(),
                r.requests.to_string(),
                r.errors.to_string(),
                secs(r.ttft_avg_seconds),
                r.prompt_tokens.to_string(),
                r.completion_tokens.to_string(),
                r.tokens_per_second_avg
                    .map_or("-".to_string(), |t| format!("{t:.1}")),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        "no requests yet".to_string()
    } else {
        table(
            &[
                "BACKEND",
                "MODEL",
                "REQUESTS",
                "ERRORS",
                "TTFT-AVG",
                "PROMPT-TOK",
                "COMPL-TOK",
                "TOK/S",
            ],
            &rows,
        )
    };
    out.push_str(&format!(
        "\nqueue {}  serving {}  reloads {} ok / {} failed",
        m.queue_depth,
        if m.serving { "yes" } else { "no" },
        m.config_reloads_success,
        m.config_reloads_failure
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22");
    }

    #[test]
    fn long_errors_are_clipped() {
        assert_eq!(clip("short"), "short");
        let c = clip(&"x".repeat(100));
        assert_eq!(c.chars().count(), 60);
        assert!(c.ends_with('…'));
    }
}
