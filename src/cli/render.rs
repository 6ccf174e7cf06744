//! Human tables for the client views: fixed columns, widest cell decides.

use crate::admin::{BackendView, StatusView};
use crate::clients::ClientsView;
use crate::metrics::MetricsView;

/// The terminal width the default tables fit (`-o wide` does not cut).
pub(crate) const WIDTH: usize = 80;

/// A table column: its header and, when its cells may be cut to fit the width, the
/// narrowest it may become.
pub(crate) struct Column {
    header: &'static str,
    cut_to: Option<usize>,
}

pub(crate) const fn fixed(header: &'static str) -> Column {
    Column {
        header,
        cut_to: None,
    }
}

const fn cut(header: &'static str, min: usize) -> Column {
    Column {
        header,
        cut_to: Some(min),
    }
}

/// Lays out rows under a header, columns separated by two spaces. With `fit`, the
/// widest cuttable column gives up a character at a time until the table fits (or
/// every cuttable column is at its narrowest), and cells are cut with `…`.
pub(crate) fn table(columns: &[Column], rows: &[Vec<String>], fit: Option<usize>) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.header.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if let Some(max) = fit {
        let gaps = 2 * columns.len().saturating_sub(1);
        while widths.iter().sum::<usize>() + gaps > max {
            let widest = columns
                .iter()
                .zip(&widths)
                .enumerate()
                .filter(|(_, (c, w))| c.cut_to.is_some_and(|min| **w > min.max(c.header.len())))
                .max_by_key(|(_, (_, w))| **w)
                .map(|(i, _)| i);
            match widest {
                Some(i) => widths[i] -= 1,
                None => break,
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let c = clip(c, *w);
            if i + 1 == cells.len() {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = vec![line(columns.iter().map(|c| c.header.to_string()).collect())];
    for r in rows {
        out.push(line(r.clone()));
    }
    out.join("\n")
}

pub(crate) fn status(s: &StatusView) -> String {
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

/// `s` in at most `max` characters, the cut marked with `…`.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

/// The backends table: at 80 columns name, state, load, models and the error; `wide`
/// adds the URL and where the backend came from, and cuts nothing.
pub(crate) fn backends(list_of: &[BackendView], wide: bool) -> String {
    if list_of.is_empty() {
        return "no backends".to_string();
    }
    let rows: Vec<Vec<String>> = list_of
        .iter()
        .map(|b| {
            let mut row = vec![b.name.clone()];
            if wide {
                row.push(b.url.clone());
            }
            row.push(state(b));
            row.push(format!("{}/{}", b.in_flight, b.max_concurrency));
            row.push(b.requests.to_string());
            if wide {
                row.push(if b.dynamic { "api" } else { "yaml" }.to_string());
            }
            row.push(list(&b.models));
            row.push(list(&b.resident));
            row.push(b.last_error.clone().unwrap_or_default());
            row
        })
        .collect();
    if wide {
        let columns = [
            "NAME",
            "URL",
            "STATE",
            "IN-FLIGHT",
            "REQUESTS",
            "SOURCE",
            "MODELS",
            "LOADED",
            "ERROR",
        ]
        .map(fixed);
        return table(&columns, &rows, None);
    }
    // The narrowest each may become adds up to 79 columns with the gaps.
    let columns = [
        cut("NAME", 6),
        cut("STATE", 8),
        fixed("IN-FLIGHT"),
        fixed("REQUESTS"),
        cut("MODELS", 10),
        cut("LOADED", 10),
        cut("ERROR", 16),
    ];
    table(&columns, &rows, Some(WIDTH))
}

/// The client keys table: use so far, what each limit has left and how often one
/// refused (`refused` = model not allowed / concurrency / requests / tokens). At 80
/// columns the buckets show what is left; `wide` adds each limit and the models.
pub(crate) fn clients(v: &ClientsView, wide: bool) -> String {
    if !v.enabled {
        return "no client keys: the proxy port is open (no `clients:` in the config)".into();
    }
    if v.clients.is_empty() {
        return "no client keys configured: every proxied request is refused (401)".into();
    }
    let left = |remaining: Option<i64>, limit: Option<u64>| match (remaining, limit) {
        (Some(r), Some(l)) if wide => format!("{r}/{l}"),
        (Some(r), Some(_)) => r.to_string(),
        _ => "-".to_string(),
    };
    let rows: Vec<Vec<String>> = v
        .clients
        .iter()
        .map(|c| {
            let max = c.max_concurrency.map_or("-".to_string(), |m| m.to_string());
            let mut row = vec![
                c.name.clone(),
                c.priority.clone(),
                format!("{}/{max}", c.in_flight),
                c.requests.to_string(),
                (c.prompt_tokens + c.completion_tokens).to_string(),
                left(c.remaining_requests, c.requests_per_minute.map(u64::from)),
                left(c.remaining_tokens, c.tokens_per_minute),
                format!(
                    "{}/{}/{}/{}",
                    c.refused_model,
                    c.throttled_concurrency,
                    c.throttled_requests,
                    c.throttled_tokens
                ),
            ];
            if wide {
                row.push(c.models.as_ref().map_or("*".to_string(), |m| m.join(",")));
            }
            row
        })
        .collect();
    let mut columns = vec![
        cut("CLIENT", 6),
        fixed("PRIORITY"),
        fixed("IN-FLIGHT"),
        fixed("REQUESTS"),
        fixed("TOKENS"),
        fixed("RPM-LEFT"),
        fixed("TPM-LEFT"),
        fixed("REFUSED"),
    ];
    if wide {
        columns.push(fixed("MODELS"));
    }
    table(&columns, &rows, (!wide).then_some(WIDTH))
}

pub(crate) fn metrics(m: &MetricsView, wide: bool) -> String {
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
        let columns = [
            cut("BACKEND", 8),
            cut("MODEL", 14),
            fixed("REQUESTS"),
            fixed("ERRORS"),
            fixed("TTFT-AVG"),
            fixed("PROMPT-TOK"),
            fixed("COMPL-TOK"),
            fixed("TOK/S"),
        ];
        table(&columns, &rows, (!wide).then_some(WIDTH))
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
            &[fixed("A"), fixed("LONGER")],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
            None,
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22");
    }

    #[test]
    fn long_cells_are_cut_to_fit_and_kept_whole_when_wide() {
        let rows = vec![vec!["a".repeat(30), "b".repeat(100), "c".into()]];
        let columns = [cut("X", 8), cut("Y", 10), fixed("Z")];
        let t = table(&columns, &rows, Some(40));
        for line in t.lines() {
            assert!(line.chars().count() <= 40, "{line:?}");
        }
        // The widest column gave up most; each cut is marked.
        let row = t.lines().nth(1).unwrap();
        assert!(row.starts_with(&"a".repeat(13)), "{row}");
        assert_eq!(row.matches('…').count(), 2, "{row}");
        assert!(row.ends_with("  c"), "{row}");
        let t = table(&columns, &rows, None);
        assert!(t.contains(&"b".repeat(100)));
    }

    #[test]
    fn clip_marks_the_cut() {
        assert_eq!(clip("short", 60), "short");
        let c = clip(&"x".repeat(100), 60);
        assert_eq!(c.chars().count(), 60);
        assert!(c.ends_with('…'));
    }
}
