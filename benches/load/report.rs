//! Per-round results, their medians across rounds, the markdown tables (like issue
//! 11's), the goal check of corral against both bare Pingoras and what corral's
//! Pingora settings are worth to the bare engine.

use serde::Serialize;

use crate::stream_client::StreamResult;
use crate::systems::System;
use crate::wrk::WrkResult;

/// One connection count of one system in one round.
#[derive(Debug, Clone, Serialize)]
pub struct LevelRun {
    pub conns: usize,
    pub wrk: WrkResult,
    /// The proxy's CPU seconds during the measured wrk run; `None` for direct.
    pub cpu_s: Option<f64>,
    pub cpu_s_per_10k: Option<f64>,
    /// Summed `VmHWM` of the proxy's processes after this level.
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestsRun {
    pub system: &'static str,
    pub round: usize,
    pub load_average: Option<f64>,
    pub idle_rss_mib: Option<f64>,
    pub levels: Vec<LevelRun>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamsRun {
    pub system: &'static str,
    pub round: usize,
    pub load_average: Option<f64>,
    pub result: Option<StreamResult>,
    pub error: Option<String>,
}

/// Medians over the rounds that measured something.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub system: &'static str,
    pub label: &'static str,
    pub idle_rss_mib: Option<f64>,
    pub levels: Vec<LevelSummary>,
    pub streams: Option<StreamSummary>,
    /// Errors of rounds that failed, to show next to the numbers.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelSummary {
    pub conns: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub cpu_s_per_10k: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// Summed over rounds: any is worth a look.
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    pub streams: usize,
    pub chunks_per_s: f64,
    pub chunk_p50_ms: f64,
    pub chunk_p99_ms: f64,
    pub chunk_p999_ms: f64,
    /// This system's p99 minus direct's (medians); `None` without a direct run.
    pub added_p99_ms: Option<f64>,
    pub cpu_s_per_100k_chunks: Option<f64>,
    pub rss_mib: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub failed_streams: u64,
    pub min_open_at_end: i64,
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn median_of<T>(items: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    median(items.iter().filter_map(f).collect())
}

pub fn summarize(
    systems: &[System],
    conns: &[usize],
    requests: &[RequestsRun],
    streams: &[StreamsRun],
) -> Vec<Summary> {
    let mut summaries: Vec<Summary> = systems
        .iter()
        .map(|&system| {
            let runs: Vec<&RequestsRun> = requests
                .iter()
                .filter(|r| r.system == system.id())
                .collect();
            let levels = conns
                .iter()
                .filter_map(|&c| {
                    let level: Vec<&LevelRun> = runs
                        .iter()
                        .flat_map(|r| r.levels.iter().filter(|l| l.conns == c))
                        .collect();
                    Some(LevelSummary {
                        conns: c,
                        rps: median_of(&level, |l| Some(l.wrk.rps))?,
                        p50_ms: median_of(&level, |l| Some(l.wrk.p50_ms))?,
                        p99_ms: median_of(&level, |l| Some(l.wrk.p99_ms))?,
                        p999_ms: median_of(&level, |l| Some(l.wrk.p999_ms))?,
                        cpu_s_per_10k: median_of(&level, |l| l.cpu_s_per_10k),
                        peak_rss_mib: median_of(&level, |l| l.peak_rss_mib),
                        errors: level.iter().map(|l| l.wrk.errors).sum(),
                    })
                })
                .collect();
            let stream_runs: Vec<&StreamResult> = streams
                .iter()
                .filter(|r| r.system == system.id())
                .filter_map(|r| r.result.as_ref())
                .collect();
            let stream_summary = (!stream_runs.is_empty()).then(|| StreamSummary {
                streams: stream_runs[0].streams,
                chunks_per_s: median_of(&stream_runs, |r| Some(r.chunks_per_s)).unwrap_or(f64::NAN),
                chunk_p50_ms: median_of(&stream_runs, |r| Some(r.chunk_p50_ms)).unwrap_or(f64::NAN),
                chunk_p99_ms: median_of(&stream_runs, |r| Some(r.chunk_p99_ms)).unwrap_or(f64::NAN),
                chunk_p999_ms: median_of(&stream_runs, |r| Some(r.chunk_p999_ms))
                    .unwrap_or(f64::NAN),
                added_p99_ms: None,
                cpu_s_per_100k_chunks: median_of(&stream_runs, |r| r.cpu_s_per_100k_chunks),
                rss_mib: median_of(&stream_runs, |r| r.rss_mib),
                peak_rss_mib: median_of(&stream_runs, |r| r.peak_rss_mib),
                failed_streams: stream_runs.iter().map(|r| r.failed_streams).sum(),
                min_open_at_end: stream_runs.iter().map(|r| r.open_at_end).min().unwrap_or(0),
            });
            let errors = runs
                .iter()
                .filter_map(|r| r.error.clone())
                .chain(
                    streams
                        .iter()
                        .filter(|r| r.system == system.id())
                        .filter_map(|r| r.error.clone()),
                )
                .collect();
            Summary {
                system: system.id(),
                label: system.label(),
                idle_rss_mib: median_of(&runs, |r| r.idle_rss_mib),
                levels,
                streams: stream_summary,
                errors,
            }
        })
        .collect();
    let direct_p99 = summaries
        .iter()
        .find(|s| s.system == System::Direct.id())
        .and_then(|s| s.streams.as_ref())
        .map(|s| s.chunk_p99_ms);
    for summary in &mut summaries {
        if let (Some(streams), Some(direct)) = (summary.streams.as_mut(), direct_p99) {
            streams.added_p99_ms = Some(streams.chunk_p99_ms - direct);
        }
    }
    summaries
}

fn rps(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn ms(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.abs() < 1.0 {
        format!("{v:.3}")
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

fn header(summaries: &[Summary], first: &str) -> String {
    let labels: Vec<&str> = summaries.iter().map(|s| s.label).collect();
    format!(
        "| {first} | {} |\n|---|{}\n",
        labels.join(" | "),
        "---:|".repeat(labels.len())
    )
}

fn row(name: &str, cells: impl Iterator<Item = String>) -> String {
    format!("| {name} | {} |\n", cells.collect::<Vec<_>>().join(" | "))
}

pub fn requests_markdown(summaries: &[Summary], conns: &[usize]) -> String {
    let mut out = header(summaries, "non-streaming `POST /api/chat`");
    let level = |s: &Summary, c: usize| s.levels.iter().find(|l| l.conns == c).cloned();
    for &c in conns {
        out += &row(
            &format!("c={c} rps"),
            summaries
                .iter()
                .map(|s| level(s, c).map_or("—".into(), |l| rps(l.rps))),
        );
        out += &row(
            &format!("c={c} p50 / p99 / p99.9 ms"),
            summaries.iter().map(|s| {
                level(s, c).map_or("—".into(), |l| {
                    format!("{} / {} / {}", ms(l.p50_ms), ms(l.p99_ms), ms(l.p999_ms))
                })
            }),
        );
        out += &row(
            &format!("c={c} CPU s / 10k req"),
            summaries
                .iter()
                .map(|s| opt(level(s, c).and_then(|l| l.cpu_s_per_10k), 3)),
        );
    }
    out += &row(
        "peak RSS MiB",
        summaries.iter().map(|s| {
            opt(
                s.levels
                    .iter()
                    .filter_map(|l| l.peak_rss_mib)
                    .reduce(f64::max),
                1,
            )
        }),
    );
    out += &row(
        "idle RSS MiB",
        summaries.iter().map(|s| opt(s.idle_rss_mib, 1)),
    );
    out += &row(
        "errors (socket + non-2xx)",
        summaries
            .iter()
            .map(|s| s.levels.iter().map(|l| l.errors).sum::<u64>().to_string()),
    );
    out
}

pub fn streams_markdown(summaries: &[Summary], offered_per_s: usize) -> String {
    let n = summaries
        .iter()
        .find_map(|s| s.streams.as_ref().map(|st| st.streams))
        .unwrap_or(0);
    let mut out = header(summaries, &format!("{n} NDJSON streams"));
    let st = |s: &Summary| s.streams.clone();
    out += &row(
        &format!("chunks/s received (offered {offered_per_s})"),
        summaries
            .iter()
            .map(|s| st(s).map_or("—".into(), |t| format!("{:.0}", t.chunks_per_s))),
    );
    out += &row(
        "chunk delay p50 / p99 / p99.9 ms",
        summaries.iter().map(|s| {
            st(s).map_or("—".into(), |t| {
                format!(
                    "{} / {} / {}",
                    ms(t.chunk_p50_ms),
                    ms(t.chunk_p99_ms),
                    ms(t.chunk_p999_ms)
                )
            })
        }),
    );
    out += &row(
        "added p99 ms (− direct)",
        summaries
            .iter()
            .map(|s| st(s).and_then(|t| t.added_p99_ms).map_or("—".into(), ms)),
    );
    out += &row(
        "CPU s / 100k chunks",
        summaries
            .iter()
            .map(|s| opt(st(s).and_then(|t| t.cpu_s_per_100k_chunks), 3)),
    );
    out += &row(
        &format!("RSS MiB at {n} streams (peak)"),
        summaries.iter().map(|s| {
            st(s).map_or("—".into(), |t| {
                format!("{} ({})", opt(t.rss_mib, 1), opt(t.peak_rss_mib, 1))
            })
        }),
    );
    out += &row(
        "failed streams / fewest open at end",
        summaries.iter().map(|s| {
            st(s).map_or("—".into(), |t| {
                format!("{} / {}", t.failed_streams, t.min_open_at_end)
            })
        }),
    );
    out
}

/// corral's engine settings, which "bare Pingora, tuned" runs with.
pub const TUNED: &str = "mimalloc, work_stealing off, unbuffered reads";

/// The engine baselines of the goals, each with the name its goal lines carry:
/// Pingora's defaults (issue 11's own baseline) and the engine with corral's allocator,
/// runtime and buffer settings, against which corral's remaining gap is its own code.
const BARE_BASELINES: [(System, &str); 2] = [
    (System::BarePingora, "bare Pingora (defaults)"),
    (System::BareTuned, "bare Pingora tuned"),
];

fn find(summaries: &[Summary], system: System) -> Option<&Summary> {
    summaries.iter().find(|s| s.system == system.id())
}

/// Issue 11's goals for corral's default configuration, where both sides were run;
/// the non-streaming ones once against each bare Pingora.
pub fn goals_markdown(summaries: &[Summary]) -> String {
    let find = |system: System| find(summaries, system);
    let mut out = String::from("| goal | measured | met |\n|---|---|---|\n");
    let mut line = |goal: String, measured: String, met: bool| {
        out += &format!(
            "| {goal} | {measured} | {} |\n",
            if met { "yes" } else { "**no**" }
        );
    };
    for (baseline, name) in BARE_BASELINES {
        let (Some(corral), Some(bare)) = (find(System::Corral), find(baseline)) else {
            continue;
        };
        for c in &corral.levels {
            let Some(b) = bare.levels.iter().find(|b| b.conns == c.conns) else {
                continue;
            };
            let rps_ratio = c.rps / b.rps;
            line(
                format!("c={}: rps ≥ 0.9 × {name}", c.conns),
                format!("{rps_ratio:.2}×"),
                rps_ratio >= 0.9,
            );
            if let (Some(cc), Some(bc)) = (c.cpu_s_per_10k, b.cpu_s_per_10k) {
                let ratio = cc / bc;
                line(
                    format!("c={}: CPU/request ≤ 1.15 × {name}", c.conns),
                    format!("{ratio:.2}×"),
                    ratio <= 1.15,
                );
            }
            let p99_ratio = c.p99_ms / b.p99_ms;
            line(
                format!("c={}: p99 ≤ 1.2 × {name}", c.conns),
                format!("{p99_ratio:.2}×"),
                p99_ratio <= 1.2,
            );
        }
    }
    if let Some(corral) = find(System::Corral) {
        if let Some(t) = &corral.streams {
            if let Some(added) = t.added_p99_ms {
                line(
                    "streaming: added chunk p99 < 1 ms".into(),
                    format!("{} ms", ms(added)),
                    added < 1.0,
                );
            }
            let nginx_cpu =
                find(System::Nginx).and_then(|n| n.streams.as_ref()?.cpu_s_per_100k_chunks);
            if let (Some(c), Some(n)) = (t.cpu_s_per_100k_chunks, nginx_cpu) {
                line(
                    "streaming: CPU per chunk ≤ nginx".into(),
                    format!("{:.2}×", c / n),
                    c <= n,
                );
            }
            if let Some(rss) = t.rss_mib {
                line(
                    format!("streaming: RSS < 100 MB at {} streams", t.streams),
                    format!("{rss:.1} MiB"),
                    rss * 1.048_576 < 100.0,
                );
            }
        }
        if let Some(idle) = corral.idle_rss_mib {
            line(
                "idle RSS < 20 MB".into(),
                format!("{idle:.1} MiB"),
                idle * 1.048_576 < 20.0,
            );
        }
    }
    out
}

/// What corral's two Pingora settings (mimalloc, `work_stealing: false`) do for the
/// bare engine, one line per connection count and one for streaming — issue 11 asks
/// for any setting that narrows the engine's gap to nginx and HAProxy to be named.
pub fn pingora_settings_lines(summaries: &[Summary]) -> Vec<String> {
    let (Some(plain), Some(tuned)) = (
        find(summaries, System::BarePingora),
        find(summaries, System::BareTuned),
    ) else {
        return Vec::new();
    };
    let verb = |before: f64, after: f64| if after >= before { "lifts" } else { "lowers" };
    let mut lines: Vec<String> = plain
        .levels
        .iter()
        .filter_map(|p| {
            let t = tuned.levels.iter().find(|t| t.conns == p.conns)?;
            Some(format!(
                "c={}: {TUNED} {} bare Pingora from {} to {} rps \
                 (CPU/10k {} → {}, p99 {} → {} ms)",
                p.conns,
                verb(p.rps, t.rps),
                rps(p.rps),
                rps(t.rps),
                opt(p.cpu_s_per_10k, 3),
                opt(t.cpu_s_per_10k, 3),
                ms(p.p99_ms),
                ms(t.p99_ms),
            ))
        })
        .collect();
    if let (Some(p), Some(t)) = (&plain.streams, &tuned.streams) {
        lines.push(format!(
            "streaming, {} streams: {TUNED} takes bare Pingora's CPU \
             per 100k chunks from {} to {}, added p99 from {} to {} ms, RSS from {} to {} MiB",
            p.streams,
            opt(p.cpu_s_per_100k_chunks, 3),
            opt(t.cpu_s_per_100k_chunks, 3),
            p.added_p99_ms.map_or("—".into(), ms),
            t.added_p99_ms.map_or("—".into(), ms),
            opt(p.rss_mib, 1),
            opt(t.rss_mib, 1),
        ));
    }
    lines
}
