//! Streaming load: N concurrent NDJSON chat streams held open through a system, each
//! chunk's delay measured as its receive time minus the send time the backend wrote
//! into it, plus the proxy's CPU and memory over the same window.
//!
//! Stream starts are spread over one stream's lifetime, and every slot opens its next
//! stream as soon as one ends, so the concurrency stays at N and the chunk rate steady.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;

use crate::backends::MODEL;
use crate::procfs;

pub struct StreamPlan {
    pub streams: usize,
    /// One stream's length at the backend: chunks × interval.
    pub lifetime: Duration,
    pub measure: Duration,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StreamResult {
    pub streams: usize,
    /// Streams open when the window closed (should be about `streams`).
    pub open_at_end: i64,
    /// Chunks received inside the window.
    pub chunks: u64,
    /// `chunks` per second of the window: below streams × rate, the harness or the
    /// machine is saturated and the delays say little about the proxy.
    pub chunks_per_s: f64,
    pub failed_streams: u64,
    pub chunk_p50_ms: f64,
    pub chunk_p99_ms: f64,
    pub chunk_p999_ms: f64,
    /// The proxy's CPU seconds over the window; `None` for direct.
    pub cpu_s: Option<f64>,
    pub cpu_s_per_100k_chunks: Option<f64>,
    pub rss_mib: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

/// What one slot saw: chunk delays in nanoseconds (inside the window) and failures.
#[derive(Default)]
struct SlotLog {
    delays_ns: Vec<u64>,
    failed: u64,
}

/// Bounds a silent stream: the backend writes a chunk every interval.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    addr: SocketAddr,
    plan: &StreamPlan,
    pid: Option<u32>,
) -> Result<StreamResult, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let url = Arc::new(format!("http://{addr}/api/chat"));
    let body = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"Tell me a story."}}]}}"#
    );
    let t0 = Instant::now() + Duration::from_millis(100);
    let window_start = t0 + plan.lifetime + Duration::from_secs(1);
    let window_end = window_start + plan.measure;
    let open = Arc::new(AtomicI64::new(0));
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..plan.streams {
        let start_at = t0 + plan.lifetime.mul_f64(slot as f64 / plan.streams as f64);
        let (client, url, body, open) = (client.clone(), url.clone(), body.clone(), open.clone());
        slots.spawn(async move {
            tokio::time::sleep_until(start_at).await;
            let mut log = SlotLog::default();
            // Bounded by the window: each pass is one stream of `lifetime`, or a
            // failure followed by a pause.
            while Instant::now() < window_end {
                open.fetch_add(1, Ordering::Relaxed);
                let outcome =
                    one_stream(&client, &url, &body, (window_start, window_end), &mut log).await;
                open.fetch_sub(1, Ordering::Relaxed);
                if outcome.is_err() {
                    log.failed += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            log
        });
    }
    tokio::time::sleep_until(window_start).await;
    let cpu_before = pid.map(procfs::cpu_seconds);
    tokio::time::sleep_until(window_end).await;
    let cpu_after = pid.map(procfs::cpu_seconds);
    let memory = pid.map(procfs::memory);
    let open_at_end = open.load(Ordering::Relaxed);

    let mut delays = Vec::new();
    let mut failed = 0;
    let deadline = window_end + plan.lifetime + CHUNK_TIMEOUT + Duration::from_secs(5);
    // Every slot ends by itself within one stream after the window; the deadline only
    // guards against a proxy that stops forwarding.
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, slots.join_next()).await {
        let log = joined.map_err(|e| format!("stream slot: {e}"))?;
        delays.extend(log.delays_ns);
        failed += log.failed;
    }
    if !slots.is_empty() {
        slots.abort_all();
        return Err(format!(
            "{} streams still open after {deadline:?}",
            slots.len()
        ));
    }
    delays.sort_unstable();
    let chunks = delays.len() as u64;
    let cpu_s = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
    Ok(StreamResult {
        streams: plan.streams,
        open_at_end,
        chunks,
        chunks_per_s: chunks as f64 / plan.measure.as_secs_f64(),
        failed_streams: failed,
        chunk_p50_ms: percentile_ms(&delays, 50.0),
        chunk_p99_ms: percentile_ms(&delays, 99.0),
        chunk_p999_ms: percentile_ms(&delays, 99.9),
        cpu_s,
        cpu_s_per_100k_chunks: cpu_s
            .filter(|_| chunks > 0)
            .map(|c| c / chunks as f64 * 1e5),
        rss_mib: memory.map(|m| m.rss_mib),
        peak_rss_mib: memory.map(|m| m.peak_mib),
    })
}

fn percentile_ms(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1e6
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The send time the backend put in a token chunk's content; `None` for the final
/// chunk (empty content).
fn sent_nanos(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = br#""content":""#;
    let at = memchr::memmem::find(line, KEY)? + KEY.len();
    let digits = &line[at..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// One stream, read to its final chunk. Chunks are split into lines here: a proxy may
/// merge or split the backend's writes.
async fn one_stream(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    (window_start, window_end): (Instant, Instant),
    log: &mut SlotLog,
) -> Result<(), String> {
    let mut response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut pending: Vec<u8> = Vec::with_capacity(512);
    loop {
        let chunk = tokio::time::timeout(CHUNK_TIMEOUT, response.chunk())
            .await
            .map_err(|_| "no chunk for 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        let Some(chunk) = chunk else {
            return Err("stream ended without a final chunk".into());
        };
        let received = unix_nanos();
        let now = Instant::now();
        let in_window = now >= window_start && now < window_end;
        pending.extend_from_slice(&chunk);
        let mut done = false;
        while let Some(end) = memchr::memchr(b'\n', &pending) {
            let line = &pending[..end];
            match sent_nanos(line) {
                Some(sent) if in_window => log.delays_ns.push(received.saturating_sub(sent)),
                Some(_) => {}
                None => done |= memchr::memmem::find(line, br#""done":true"#).is_some(),
            }
            pending.drain(..=end);
        }
        if done {
            return Ok(());
        }
    }
}
